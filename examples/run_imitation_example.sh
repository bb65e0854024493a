#!/usr/bin/env bash
# make imitation-example: imitation's preference comparisons on Pendulum-v1 answered through a live Heronry server.
#
# A throwaway server of its own (SQLite and media in a temporary folder, tasks in-process, a free port), a
# researcher and the project of examples/imitation_pendulum.yaml, two simulated annotators answering through the
# server's API (simulate_annotators, waiting for each round of questions), and the example in imitation's own
# virtualenv (var/imitation-venv, from examples/requirements-imitation.txt). Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
IMITATION_VENV=var/imitation-venv
export PYTHONPATH=platform:.

bash examples/imitation_venv.sh "$IMITATION_VENV"

mkdir -p var && work=$(mktemp -d "$PWD/var/imitation-example.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The server's settings, shared by every manage.py below (simulate_annotators reads clips' true rewards from
# the same database and media). The environment's DATABASE_URL and broker (CI's PostgreSQL and Redis) are not used.
export DATABASE_URL="sqlite:///$work/heronry.sqlite3"
export MEDIA_ROOT="$work/media"
export CELERY_BROKER_URL="memory://"
export CELERY_TASK_ALWAYS_EAGER=true
unset HERONRY_REQUIRE_SERVERS || true
PASSWORD=$(python3 -c "import secrets; print(secrets.token_urlsafe(12))")
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
URL="http://127.0.0.1:$PORT"

"$PY" manage.py migrate --noinput >"$work/migrate.log"
"$PY" manage.py shell -c "
from accounts.models import Role
from accounts.services import user_create
user_create(username='researcher', password='$PASSWORD', role=Role.RESEARCHER)
"
"$PY" manage.py project_create examples/imitation_pendulum.yaml --owner researcher

"$PY" manage.py runserver "127.0.0.1:$PORT" --noreload >"$work/server.log" 2>&1 &
pids+=($!)
up() { "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$URL/api/v1/schema/" 2>/dev/null; }
for _ in $(seq 60); do up && break; sleep 1; done
up || { tail -40 "$work/server.log"; exit 1; }

# Two annotators (the true-reward oracle; "equal" when two clips' returns are within 10), waiting up to 10 minutes
# for each new round of questions.
"$PY" manage.py simulate_annotators --project imitation-pendulum --url "$URL" --annotators 2 \
  --wait-seconds 600 --wait-when-done --equal-threshold 10 >"$work/annotators.log" 2>&1 &
annotators=$!
pids+=($annotators)

status=0
"$IMITATION_VENV/bin/python" examples/imitation_pendulum.py --url "$URL" --username researcher \
  --password "$PASSWORD" --project imitation-pendulum "$@" || status=$?
kill "$annotators" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "--- server log (tail) ---"; tail -40 "$work/server.log"
  echo "--- annotators log ---"; cat "$work/annotators.log"
fi
exit "$status"
