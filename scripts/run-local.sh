#!/usr/bin/env bash
# Local stack: api-flow-0..2 on :9001..9003 and the edge on :8080 (admin :8686),
# all data under ./data. Ctrl-C stops everything cleanly (SIGTERM, then wait).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
DATA=./data
export FLOW_BOOTSTRAP_KEY="${FLOW_BOOTSTRAP_KEY:-local-dev-key-0000000000}"
mkdir -p "$DATA"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping: edge first (it drains), then the backends"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  echo "stopped"
  exit "${1:-0}"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

for n in 0 1 2; do
  "$BIN/api" -listen "127.0.0.1:900$((n+1))" -partition "$n" -partitions 3 \
    -data-dir "$DATA/api-flow-$n" >"$DATA/api-flow-$n.log" 2>&1 &
  pids+=($!)
done

# Wait for the backends to answer their readiness probe.
for n in 0 1 2; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:900$((n+1))/health/readiness" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

"$BIN/edge" run -config configs/local/edge.toml 2>"$DATA/edge.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8686/health/readiness >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<MSG
flowedge local stack is up:
  edge public   http://127.0.0.1:8080   (client traffic)
  edge admin    http://127.0.0.1:8686   (/health/*, /metrics, /edge/v1/...)
  api-flow-0    http://127.0.0.1:9001
  api-flow-1    http://127.0.0.1:9002
  api-flow-2    http://127.0.0.1:9003
  data          $DATA   (logs: $DATA/*.log)
  API key       $FLOW_BOOTSTRAP_KEY

Try:
  curl -i -X POST http://127.0.0.1:8080/api/v1/processes/order-42/events \\
       -H 'X-Process-ID: order-42' -H 'Authorization: Bearer $FLOW_BOOTSTRAP_KEY' \\
       -H 'Content-Type: application/json' -d '{"type":"created"}'

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "a process of the stack exited; see $DATA/*.log"
stop 1
