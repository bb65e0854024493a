#!/usr/bin/env bash
# Full serving benchmark: for each size, seed the bench database, start gunicorn, run human pace and
# closed-loop 1/8/32, stop gunicorn. Results are appended as JSON lines to $OUT (default var/bench-serve.jsonl).
#
#   bench/serve/run_all.sh                 # sizes 100000 and 1000000
#   SIZES=100000 HUMAN_S=60 CLOSED_S=30 WORKERS=4 bench/serve/run_all.sh
#   APP_DIR=/path/to/other/checkout LABEL=baseline bench/serve/run_all.sh   # serve another tree's code
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-"100000 1000000"}
HUMAN_S=${HUMAN_S:-60}
HUMAN_WARMUP=${HUMAN_WARMUP:-10}
CLOSED_S=${CLOSED_S:-30}
WORKERS=${WORKERS:-4}
GUNICORN_ARGS=${GUNICORN_ARGS:-"-w $WORKERS"}
PORT=${PORT:-8100}
LABEL=${LABEL:-run}
OUT=${OUT:-var/bench-serve.jsonl}
APP_DIR=${APP_DIR:-$PWD}
DB_URL=postgres://postgres@127.0.0.1:5432/heronry_bench
PIDFILE=$(mktemp -u /tmp/heronry-bench-gunicorn.XXXXXX.pid)
mkdir -p "$(dirname "$OUT")"

stop_server() { if [[ -f $PIDFILE ]]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; sleep 2; rm -f "$PIDFILE"; fi; }
trap stop_server EXIT

for N in $SIZES; do
  .venv/bin/python -m bench.serve.seed --queries "$N"
  DEBUG=false SECRET_KEY=bench-not-a-secret-0123456789abcdef ALLOWED_HOSTS=127.0.0.1 \
  SECURE_SSL_REDIRECT=false SECURE_HSTS_SECONDS=0 DATABASE_URL=$DB_URL \
  CELERY_BROKER_URL=${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0} PYTHONPATH=$APP_DIR/platform:$APP_DIR \
    .venv/bin/gunicorn config.wsgi:application --chdir "$APP_DIR" -b 127.0.0.1:$PORT $GUNICORN_ARGS --pid "$PIDFILE" \
    --log-level warning 2>>var/bench-serve-gunicorn.log &
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
  common=(--port "$PORT" --db "$DB_URL" --json "$OUT")
  # Human pace: annotators 0-99, open loop, one cycle every 2 s each; 10 s warm-up (fresh workers and
  # connections make a backlog at the start that takes a few seconds to drain).
  .venv/bin/python -m bench.serve.loadgen --mode human --clients 100 --duration "$HUMAN_S" --warmup "$HUMAN_WARMUP" --label "$LABEL N=$N human" "${common[@]}"
  # Saturation: annotators 100-131, closed loop.
  for C in 1 8 32; do
    .venv/bin/python -m bench.serve.loadgen --mode closed --clients "$C" --duration "$CLOSED_S" --user-offset 100 \
      --label "$LABEL N=$N closed" "${common[@]}"
  done
  stop_server
done
