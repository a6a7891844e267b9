#!/usr/bin/env bash
# Local stack: api-flow-0..2 on :9001..9003 (metrics :9101..9103) and the edge
# on :8080 (admin :8686), all data under ./data (or $FLOW_RUN_DATA). Ctrl-C
# stops everything cleanly: the edge first (it drains), then the backends
# (SIGTERM each, then wait). The api-flow processes use whatever production
# components the environment names (DATABASE_URL, REDIS_URL,
# STORAGE_PROVIDER…; scripts/run-prod.sh sets them), else the embedded ones.
#
# Works with the bash 3.2 of macOS too (no `wait -n`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
DATA=${FLOW_RUN_DATA:-./data}
export FLOW_RUN_DATA=$DATA # the edge config puts its queue there too
CONFIG=configs/local/edge.toml
export FLOW_BOOTSTRAP_KEY="${FLOW_BOOTSTRAP_KEY:-local-dev-key-0000000000}"

die() { echo "run-local: $*" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || die "needs curl (to wait for the processes to be ready)"
for b in edge api; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: 'make run' builds it (or 'make build')"
done
# A taken port would make a process exit at once: say which, before starting anything.
for port in 9001 9002 9003 9101 9102 9103 8080 8686; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another 'make run'?); stop that first"
  fi
done
mkdir -p "$DATA"

pids=()
names=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping: edge first (it drains), then the backends"
  local i pid n
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    pid=${pids[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    # Each process exits within its shutdown timeout (30 s); give up after 40 s.
    for ((n=0; n<400; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${names[$i]} did not stop within 40 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  echo "stopped"
  exit "${1:-0}"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

# start NAME LOG CMD...: run CMD in the background in its own process group
# (set -m), so that Ctrl-C reaches only this script, which then stops the
# processes in order.
start() {
  local name=$1 log=$2
  shift 2
  set -m
  "$@" >"$log" 2>&1 &
  pids+=($!)
  set +m
  names+=("$name")
}

# wait_ready NAME URL LOG: until URL answers 2xx; fail if the process exits or 20 s pass.
wait_ready() {
  local name=$1 url=$2 log=$3 pid=${pids[${#pids[@]}-1]} n
  for ((n=0; n<200; n++)); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run-local: $name exited at start; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      stop 1
    fi
    sleep 0.1
  done
  echo "run-local: $name not ready after 20 s ($url); last lines of $log:" >&2
  tail -n 20 "$log" >&2
  stop 1
}

for n in 0 1 2; do
  start "api-flow-$n" "$DATA/api-flow-$n.log" \
    "$BIN/api" -listen "127.0.0.1:900$((n+1))" -metrics-listen "127.0.0.1:910$((n+1))" \
    -partition "$n" -partitions 3 -data-dir "$DATA/api-flow-$n"
  wait_ready "api-flow-$n" "http://127.0.0.1:900$((n+1))/health/readiness" "$DATA/api-flow-$n.log"
done
start edge "$DATA/edge.log" "$BIN/edge" run -config "$CONFIG"
wait_ready edge http://127.0.0.1:8686/health/readiness "$DATA/edge.log"

cat <<MSG
flowedge local stack is up:
  edge public   http://127.0.0.1:8080   (client traffic)          log $DATA/edge.log
  edge admin    http://127.0.0.1:8686   (/health/*, /metrics, /edge/v1/...)
  api-flow-0    http://127.0.0.1:9001   data $DATA/api-flow-0     log $DATA/api-flow-0.log   metrics :9101
  api-flow-1    http://127.0.0.1:9002   data $DATA/api-flow-1     log $DATA/api-flow-1.log
  api-flow-2    http://127.0.0.1:9003   data $DATA/api-flow-2     log $DATA/api-flow-2.log
  edge queue    $DATA/edge               config $CONFIG
  API key       $FLOW_BOOTSTRAP_KEY

Try, in another terminal:
  curl -i -X POST http://127.0.0.1:8080/api/v1/processes/order-42/events \\
       -H 'X-Process-ID: order-42' -H 'Authorization: Bearer $FLOW_BOOTSTRAP_KEY' \\
       -H 'Content-Type: application/json' -d '{"type":"created"}'
  curl -s http://127.0.0.1:8686/edge/v1/partitions

Ctrl-C stops everything.
MSG

# Watch the processes; a portable stand-in for `wait -n`.
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "run-local: ${names[$i]} exited; last lines of its log:" >&2
      case ${names[$i]} in
        edge) tail -n 20 "$DATA/edge.log" >&2 ;;
        *) tail -n 20 "$DATA/${names[$i]}.log" >&2 ;;
      esac
      stop 1
    fi
  done
  sleep 1
done
