#!/usr/bin/env bash
# Builds imitation's own virtualenv (default var/imitation-venv) when it is missing or older than its pins or the
# client: make imitation-example and make bench-loop's anchors (bench/loop/anchors.py) run in it.
set -euo pipefail
cd "$(dirname "$0")/.."
IMITATION_VENV="${1:-var/imitation-venv}"

# imitation's virtualenv: torch first and pinned (the local CPU wheel), then the pins, then the client.
stamp="$IMITATION_VENV/.installed"
if [ ! -f "$stamp" ] || [ examples/requirements-imitation.txt -nt "$stamp" ] || [ -n "$(find client -newer "$stamp" -name '*.py' | head -1)" ]; then
  test -d "$IMITATION_VENV" || "${PYTHON:-python3.11}" -m venv "$IMITATION_VENV"
  "$IMITATION_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$IMITATION_VENV/bin/python" -m pip install --quiet torch==2.13.0
  "$IMITATION_VENV/bin/python" -m pip install --quiet -r examples/requirements-imitation.txt
  "$IMITATION_VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps ./client
  "$IMITATION_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
