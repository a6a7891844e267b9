#!/usr/bin/env bash
# The local stack of `make run` on api-flow's production components instead
# of the embedded ones: PostgreSQL (DATABASE_URL), Redis (REDIS_URL) and an
# S3-compatible server (versitygw, STORAGE_PROVIDER=s3), each started here on
# loopback with its files under ./data/prod, and stopped when the stack
# stops (Ctrl-C). The Debian packages postgresql and redis-server must be
# installed (scripts/test-deps.sh) and ./bin/versitygw built (make
# test-servers); `make run-prod` sees to both.
set -euo pipefail
cd "$(dirname "$0")/.."
PROD=./data/prod
PG_PORT=55432 REDIS_PORT=56379 S3_PORT=57070

die() { echo "run-prod: $*" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || die "PostgreSQL is not installed (scripts/test-deps.sh installs it)"
command -v redis-server >/dev/null || die "redis-server is not installed (scripts/test-deps.sh installs it)"
[ -x ./bin/versitygw ] || die "./bin/versitygw is missing ('make test-servers' builds it)"
for port in $PG_PORT $REDIS_PORT $S3_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another 'make run-prod'?); stop that first"
  fi
done
mkdir -p "$PROD/s3/flow-content" "$PROD/s3/flow-meta"

# PostgreSQL refuses to run as root: then it runs as the postgres user.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
  mkdir -p "$PROD/pg" && chown postgres: "$PROD/pg"
fi
if [ ! -f "$PROD/pg/data/PG_VERSION" ]; then
  "${as_pg[@]}" "$pgbin/initdb" -D "$PROD/pg/data" -U postgres -A trust -E UTF8 --locale=C >"$PROD/pg/initdb.log" 2>&1 \
    || die "initdb failed: see $PROD/pg/initdb.log"
fi

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/postgres" -D "$PROD/pg/data" -p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 >"$PROD/postgres.log" 2>&1 &
pids+=($!)
redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$PROD" --appendonly yes --save "" >"$PROD/redis.log" 2>&1 &
pids+=($!)
ROOT_ACCESS_KEY_ID=flowedge ROOT_SECRET_ACCESS_KEY=flowedge-local-secret \
  ./bin/versitygw --port 127.0.0.1:$S3_PORT posix "$PROD/s3" >"$PROD/s3.log" 2>&1 &
pids+=($!)

for ((n=0; n<100; n++)); do
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p $PG_PORT && break
  sleep 0.2
done
"$pgbin/pg_isready" -q -h 127.0.0.1 -p $PG_PORT || die "PostgreSQL did not start: see $PROD/postgres.log"

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export STORAGE_PROVIDER=s3 S3_ENDPOINT="http://127.0.0.1:$S3_PORT" S3_REGION=us-east-1 \
  S3_ACCESS_KEY_ID=flowedge S3_SECRET_ACCESS_KEY=flowedge-local-secret S3_USE_PATH_STYLE=true \
  CONTENT_BUCKET=flow-content META_BUCKET=flow-meta
export FLOW_RUN_DATA="$PROD"
echo "run-prod: PostgreSQL 127.0.0.1:$PG_PORT, Redis 127.0.0.1:$REDIS_PORT, S3 http://127.0.0.1:$S3_PORT (buckets flow-content, flow-meta), files under $PROD"
# Ctrl-C reaches run-local.sh, which stops the stack; then cleanup stops the
# servers. (A no-op handler, not an ignored signal: an ignored INT would be
# ignored by run-local.sh too.)
trap ':' INT
./scripts/run-local.sh || true
