#!/usr/bin/env bash
# Local stack: api-flow-0..2 on :9001..9003 (metrics :9101..9103) and the edge
# on :8080 (admin :8686), all data under ./data (or $FLOW_RUN_DATA), logs
# appended to its *.log files. The api-flow processes use whatever production
# components the environment names (DATABASE_URL, REDIS_URL, STORAGE_PROVIDER…;
# scripts/run-prod.sh sets them), else the embedded ones.
#
#   scripts/run-local.sh                  start the stack (make run); Ctrl-C stops it
#   scripts/run-local.sh backend-stop N   stop api-flow-N of a running stack (make backend-stop N)
#   scripts/run-local.sh backend-start N  start it again                      (make backend-start N)
#
# A backend that exits is reported, not fatal: the edge holds its partition's
# writes until it is back. Only the edge exiting stops the stack. Ctrl-C stops
# everything cleanly: the edge first (it drains), then the backends.
#
# Works with the bash 3.2 of macOS too (no `wait -n`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
DATA=${FLOW_RUN_DATA:-./data}
export FLOW_RUN_DATA=$DATA # the edge config puts its queue there too
RUN=$DATA/run # pid files: the stack's processes, for backend-stop/-start and the watcher
CONFIG=configs/local/edge.toml
API_CONFIG=configs/local/api.toml
BACKENDS=3
# Ports: the defaults above; the environment may move them (the script's test
# runs it on free ports). configs/local/edge.toml reads the same variables.
export FLOWEDGE_PUBLIC_PORT=${FLOWEDGE_PUBLIC_PORT:-8080}
export FLOWEDGE_ADMIN_PORT=${FLOWEDGE_ADMIN_PORT:-8686}
export FLOWEDGE_API_PORT_0=${FLOWEDGE_API_PORT_0:-9001}
export FLOWEDGE_API_PORT_1=${FLOWEDGE_API_PORT_1:-9002}
export FLOWEDGE_API_PORT_2=${FLOWEDGE_API_PORT_2:-9003}
export FLOWEDGE_METRICS_PORT_0=${FLOWEDGE_METRICS_PORT_0:-9101}
export FLOWEDGE_METRICS_PORT_1=${FLOWEDGE_METRICS_PORT_1:-9102}
export FLOWEDGE_METRICS_PORT_2=${FLOWEDGE_METRICS_PORT_2:-9103}
api_port() { eval "echo \$FLOWEDGE_API_PORT_$1"; }
metrics_port() { eval "echo \$FLOWEDGE_METRICS_PORT_$1"; }
PUBLIC=http://127.0.0.1:$FLOWEDGE_PUBLIC_PORT
ADMIN=http://127.0.0.1:$FLOWEDGE_ADMIN_PORT
export FLOW_BOOTSTRAP_KEY="${FLOW_BOOTSTRAP_KEY:-local-dev-key-0000000000}"

die() { echo "run-local: $*" >&2; exit 1; }

pidfile() { echo "$RUN/$1.pid"; }
# pid_of NAME: the pid in NAME's pid file if that process runs, else nothing.
pid_of() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# launch NAME LOG CMD...: run CMD in the background in its own process group
# (set -m), so that Ctrl-C reaches only this script; append to LOG; record
# the pid.
launch() {
  local name=$1 log=$2
  shift 2
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) run-local: starting $name: $*" >>"$log"
  set -m
  "$@" </dev/null >>"$log" 2>&1 &
  local pid=$!
  set +m
  echo "$pid" >"$(pidfile "$name")"
  LAUNCHED=$pid
}

# wait_ready NAME URL LOG PID: until URL answers 2xx; fail if PID exits or 20 s pass.
wait_ready() {
  local name=$1 url=$2 log=$3 pid=$4 n
  for ((n=0; n<200; n++)); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run-local: $name (pid $pid) exited at start; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run-local: $name not ready after 20 s ($url); last lines of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# start_backend N: start api-flow-N and wait until it is ready.
start_backend() {
  local n=$1 name="api-flow-$1"
  launch "$name" "$DATA/$name.log" \
    "$BIN/api" -config "$API_CONFIG" -listen "127.0.0.1:$(api_port "$n")" -metrics-listen "127.0.0.1:$(metrics_port "$n")" -partition "$n" -partitions "$BACKENDS" -data-dir "$DATA/$name"
  wait_ready "$name" "http://127.0.0.1:$(api_port "$n")/health/readiness" "$DATA/$name.log" "$LAUNCHED"
}

# stop_pid NAME PID: SIGTERM, wait up to 40 s (each process drains within its
# 30 s shutdown timeout), then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 n
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((n=0; n<400; n++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "run-local: $name (pid $pid) did not stop within 40 s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

check_n() {
  case ${1:-} in
    ''|*[!0-9]*) die "which backend? give its number, 0..$((BACKENDS-1)) (e.g. make backend-stop N=1)" ;;
  esac
  [ "$1" -lt "$BACKENDS" ] || die "no api-flow-$1: the local stack has api-flow-0..$((BACKENDS-1))"
}

case ${1:-} in
  backend-stop)
    check_n "${2:-}"
    pid=$(pid_of "api-flow-$2")
    [ -n "$pid" ] || die "api-flow-$2 is not running"
    echo "stopping api-flow-$2 (pid $pid)"
    stop_pid "api-flow-$2" "$pid"
    echo "api-flow-$2 stopped: the edge holds partition $2's writes (202 queued) until 'make backend-start $2'"
    exit 0 ;;
  backend-start)
    check_n "${2:-}"
    [ -x "$BIN/api" ] || die "$BIN/api is missing: 'make build'"
    [ -n "$(pid_of edge)" ] || echo "run-local: note: no edge of 'make run' is running" >&2
    pid=$(pid_of "api-flow-$2")
    [ -z "$pid" ] || die "api-flow-$2 is already running (pid $pid)"
    mkdir -p "$RUN"
    start_backend "$2" || exit 1
    echo "api-flow-$2 started (pid $LAUNCHED), log $DATA/api-flow-$2.log: the edge delivers what it held, in order"
    exit 0 ;;
  '') ;;
  *) die "unknown command '$1' (none, backend-stop N or backend-start N)" ;;
esac

command -v curl >/dev/null 2>&1 || die "needs curl (to wait for the processes to be ready)"
for b in edge api; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: 'make run' builds it (or 'make build')"
done
# A taken port would make a process exit at once: say which, before starting anything.
for port in $FLOWEDGE_API_PORT_0 $FLOWEDGE_API_PORT_1 $FLOWEDGE_API_PORT_2 $FLOWEDGE_METRICS_PORT_0 $FLOWEDGE_METRICS_PORT_1 $FLOWEDGE_METRICS_PORT_2 $FLOWEDGE_PUBLIC_PORT $FLOWEDGE_ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another 'make run'?); stop that first"
  fi
done
mkdir -p "$DATA" "$RUN"
rm -f "$RUN"/*.pid

stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping: edge first (it drains), then the backends"
  local name pid n
  pid=$(pid_of edge)
  [ -z "$pid" ] || stop_pid edge "$pid"
  for ((n=BACKENDS-1; n>=0; n--)); do
    name="api-flow-$n"
    pid=$(pid_of "$name")
    [ -z "$pid" ] || stop_pid "$name" "$pid"
  done
  wait 2>/dev/null || true
  rm -f "$RUN"/*.pid
  echo "stopped"
  exit "${1:-0}"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

for ((n=0; n<BACKENDS; n++)); do
  start_backend "$n" || stop 1
done
launch edge "$DATA/edge.log" "$BIN/edge" run -config "$CONFIG"
wait_ready edge "$ADMIN/health/readiness" "$DATA/edge.log" "$LAUNCHED" || stop 1

cat <<MSG
flowedge local stack is up:
  edge public   $PUBLIC   (client traffic)          pid $(pid_of edge)  log $DATA/edge.log
  edge admin    $ADMIN   (status page, /health/*, /metrics, /edge/v1/...)
  api-flow-0    http://127.0.0.1:$(api_port 0)   data $DATA/api-flow-0    pid $(pid_of api-flow-0)  log $DATA/api-flow-0.log  metrics :$(metrics_port 0)
  api-flow-1    http://127.0.0.1:$(api_port 1)   data $DATA/api-flow-1    pid $(pid_of api-flow-1)  log $DATA/api-flow-1.log
  api-flow-2    http://127.0.0.1:$(api_port 2)   data $DATA/api-flow-2    pid $(pid_of api-flow-2)  log $DATA/api-flow-2.log
  edge queue    $DATA/edge               config $CONFIG
  API key       $FLOW_BOOTSTRAP_KEY

Try, in another terminal:
  curl -i -X POST $PUBLIC/api/v1/processes/order-42/events \\
       -H 'X-Process-ID: order-42' -H 'Authorization: Bearer $FLOW_BOOTSTRAP_KEY' \\
       -H 'Content-Type: application/json' -d '{"type":"created"}'
  curl -s $ADMIN/edge/v1/partitions
  make backend-stop N=1; make backend-start N=1    # an outage of api-flow-1
  ./bin/edge top -admin $ADMIN              # live view (or open $ADMIN/)

Logs are appended (each start is marked). Ctrl-C stops everything.
MSG

# Watch the processes (a portable stand-in for `wait -n`): the edge exiting
# ends the stack; a backend exiting is reported once, and its return too.
down=()
for ((n=0; n<BACKENDS; n++)); do down[$n]=0; done
while :; do
  if [ -z "$(pid_of edge)" ]; then
    echo "run-local: the edge exited; last lines of $DATA/edge.log:" >&2
    tail -n 20 "$DATA/edge.log" >&2
    stop 1
  fi
  for ((n=0; n<BACKENDS; n++)); do
    pid=$(pid_of "api-flow-$n")
    if [ -z "$pid" ] && [ "${down[$n]}" = 0 ]; then
      down[$n]=1
      echo "run-local: api-flow-$n exited; the edge holds partition $n's writes until it is back ('make backend-start $n'). Last lines of $DATA/api-flow-$n.log:" >&2
      tail -n 5 "$DATA/api-flow-$n.log" >&2
    elif [ -n "$pid" ] && [ "${down[$n]}" = 1 ]; then
      down[$n]=0
      echo "run-local: api-flow-$n is back (pid $pid)"
    fi
  done
  sleep 1
done
