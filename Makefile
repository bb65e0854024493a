# Heronry: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export PYTHONPATH := platform:.
export SDL_VIDEODRIVER ?= dummy
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: install demo serve worker test test-fast lint typecheck imitation-example bench bench-serve bench-exports bench-loop bench-loop-e2e bench-mujoco bench-scale clean

install: $(VENV)/.installed

# torch first and pinned: it resolves to the local CPU wheel; anything looser pulls CUDA builds.
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet -e ./client
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo
	$(MAKE) --no-print-directory serve

# The web server and a real Celery worker (file-system broker, all queues) side by side, with DEBUG off (the site's
# own 404/500 pages); Ctrl-C or SIGTERM stops both within seconds (platform/config/serve.py says how).
serve: install
	$(PY) -m config.serve --host $(HOST) --port $(PORT)

worker: install
	$(VENV)/bin/celery -A config worker -Q default,render,train --loglevel INFO

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not browser and not integration"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy .

# imitation's preference comparisons on Pendulum-v1 answered by simulated annotators through a throwaway server;
# imitation gets its own virtualenv (var/imitation-venv, examples/requirements-imitation.txt). A few minutes.
imitation-example: install
	bash examples/run_imitation_example.sh

bench: install
	$(PY) -m bench.heron.bench_heron
	$(PY) -m bench.reward.bench_reward

# The serving benchmark needs a PostgreSQL server (DATABASE_URL); it seeds its own database heronry_bench.
bench-serve: install
	bash bench/serve/run_all.sh

# The export benchmark needs a PostgreSQL server on 127.0.0.1:5432; it seeds its own database heronry_bench_exports.
bench-exports: install
	$(PY) -m bench.exports.seed --judgments 1000000
	$(PY) -m bench.exports.run --formats jsonl csv parquet --json var/bench-exports.jsonl

# The researcher's pages at 1 000 000 judgments (needs a PostgreSQL server on 127.0.0.1:5432; seeds its own
# database heronry_bench_scale, about 4 minutes on 2 cores, then times every page; results in var/bench-scale.jsonl).
bench-scale: install
	$(PY) -m bench.scale.seed --judgments 1000000
	$(PY) -m bench.scale.run --json var/bench-scale.jsonl

# HERON on MuJoCo (Hopper-v5) through the platform, steps run in-process (SQLite, no broker); 3 seeds, about
# 30 minutes on 2 CPU cores; torch uses CUDA when one is present. Resumable: recorded seeds are skipped.
bench-mujoco: install
	$(PY) -m bench.mujoco.run --seeds 0 1 2 --steps 50000 --episodes 20

# Issue 13: the loop's label and step curves, in-process (SQLite, no servers), every variant on the same
# environment-step budget, 50 fixed evaluation episodes per policy. Resumable: each finished (variant, seed) is
# appended to bench/loop/results/curve.jsonl and skipped by a rerun, so run it in parts (LOOP_SEEDS="0 1" …).
# About 3 CPU-minutes per seed and variant on an idle core; the summary writes bench/loop/summary.md and PNGs.
LOOP_SEEDS ?= 0 1 2 3 4 5 6 7 8 9
LOOP_NOISY_SEEDS ?= 0 1 2 3 4
ANCHOR_SEEDS ?= 0 1 2 3 4
bench-loop: install
	$(PY) -m bench.loop.curve --variants true pairwise heron --seeds $(LOOP_SEEDS)
	$(PY) -m bench.loop.curve --variants pairwise-noisy pairwise-mistake pairwise-equal --seeds $(LOOP_NOISY_SEEDS)
	bash examples/imitation_venv.sh
	var/imitation-venv/bin/python -m bench.loop.anchors --anchors sb3-sac --seeds $(ANCHOR_SEEDS)
	var/imitation-venv/bin/python -m bench.loop.anchors --anchors imitation-tutorial --seeds $(LOOP_SEEDS)
	$(PY) -m bench.loop.heron_margin --sigmas 1 0.25 --seeds $(ANCHOR_SEEDS)
	$(PY) -m bench.loop.summary

# The loop end to end through the servers (needs PostgreSQL and Redis): first issue 13's ≤ 60 s configuration (HERON
# and the true-reward ceiling, 2 iterations of 4 000 SAC steps, evaluated afterwards on the curve's 50 fixed starts;
# rows in bench/loop/results/e2e.jsonl), then issue 4's benchmark (HERON ranking, pairwise oracle over HTTP,
# true-reward ceiling; 3 seeds each, var/bench-loop.jsonl).
LOOP_DB ?= postgres://postgres@127.0.0.1:5432/heronry_loop
LOOP_BROKER ?= redis://127.0.0.1:6379/3
E2E_SEEDS ?= 0 1 2 3 4
bench-loop-e2e: install
	-createdb -h 127.0.0.1 -U postgres heronry_loop 2>/dev/null
	for variant in heron true; do \
	  DATABASE_URL=$(LOOP_DB) CELERY_BROKER_URL=$(LOOP_BROKER) $(PY) -m bench.loop.run --variant $$variant \
	    --iterations 2 --steps 4000 --eval-episodes 50 --seeds $(E2E_SEEDS) --out bench/loop/results/e2e.jsonl || exit 1; \
	done
	for variant in heron pairwise true; do \
	  DATABASE_URL=$(LOOP_DB) CELERY_BROKER_URL=$(LOOP_BROKER) $(PY) -m bench.loop.run --variant $$variant --seeds 0 1 2 || exit 1; \
	done

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
