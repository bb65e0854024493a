"""bench/loop: the whole loop on Pendulum-v1, end to end through the platform, timed per seed.

Variants (issue 4, item 7):
  heron     one factor ranking (angle > angular velocity > torque, the preset's σ) submitted through the REST API,
            then iterations in ranking mode: HERON preferences → reward model → SAC → clips;
  pairwise  synthetic annotators (true-reward oracle, B-Pref defaults) label through the REST API;
            each iteration waits for its label budget, trains, and asks new (active) questions;
  true      the same SAC budget on the environment's true reward: the ceiling.

Everything runs as in production: real Celery workers against PostgreSQL and Redis, split as in
docker/compose.yaml (a worker per queue: default, render with two processes, train; ``--workers one`` runs a
single process on all queues, as ``make demo`` does), gunicorn serving the API the annotators use, clips
made by a generate_clips job. The clock starts before the first job is queued and stops when the last iteration
is done; the row's ``drained`` figures run on until the work the loop handed to the render queue (policy videos,
the ranking page's example clips) is finished too, with the CPU seconds of all of it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/heronry_bench CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \
        .venv/bin/python -m bench.loop.run --variant heron --seeds 0 1 2

Results are appended as JSON lines to var/bench-loop.jsonl (``--out``), one as each seed finishes, and a rerun skips
the seeds recorded there with the same settings, commit and machine (each row names its CPU); they are summarised on
stdout: the true return, wall
seconds and CPU seconds (workers with their ffmpeg children, gunicorn, this driver) with the load average, since
wall time on a shared machine says more about the neighbours than about the code; per iteration, each step's
wall, CPU and queue seconds. ``--profile`` runs the worker under cProfile; ``--policy '{"train_freq": 2}'``
overrides PolicyConfig fields; ``--steps`` the SAC steps per iteration. ``--eval-episodes 50`` evaluates every
iteration's policy afterwards, outside the clock, on the fixed start states of ``bench/loop/curve.py`` (the
``fixed_eval_mean`` of each row), so a fast configuration's return can be set beside the curve's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.loop.curve import recorded  # noqa: E402  (after the path setup above)
from bench.machine import commit, machine  # noqa: E402

PORT = int(os.environ.get("BENCH_PORT", "8200"))
INITIAL_ROLLOUTS = 24  # × 4 clips of 50 steps: random play and a swing-up controller at four noise levels

VARIANTS: dict[str, dict[str, Any]] = {
    "heron": {
        "feedback_mode": "ranking",
        "iterations": 2,
        "loop": {"policy_timesteps": 10_000, "label_budget": 0, "preference_cap": 5_000},
    },
    "pairwise": {
        "feedback_mode": "pairwise",
        "iterations": 4,
        "loop": {"policy_timesteps": 10_000, "label_budget": 50},
    },
    "true": {
        "feedback_mode": "ranking",
        "iterations": 2,
        "loop": {"policy_timesteps": 10_000, "label_budget": 0, "policy_reward": "true"},
    },
}


def _setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _start(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}", **env},
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _wait_for_server() -> None:
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v1/schema/", timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not come up")


def _process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its live descendants, plus what their finished and
    waited-for children used (ffmpeg renders, gunicorn's restarted workers): read from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(value) for value in fields[11:15]) / tick  # utime stime cutime cstime
    tree = {root}
    grown = True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    return sum(times.get(pid, 0.0) for pid in tree)


def _driver_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuClock:
    """CPU seconds spent by the bench driver (this process: the simulated annotators), the Celery workers
    and gunicorn since the clock was made. Wall time on a shared machine depends on the load; CPU time
    much less, so it is the figure to compare across runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = dict(pids)
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        return {"driver": _driver_cpu(), **{name: _process_tree_cpu(pid) for name, pid in self._pids.items()}}

    def elapsed(self) -> dict[str, float]:
        now = self._read()
        spent = {name: round(now[name] - self._start[name], 1) for name in now}
        return {**spent, "total": round(sum(spent.values()), 1)}


def variant_spec(variant: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The variant's project settings with the command line's overrides applied."""
    spec = {**VARIANTS[variant]}
    if "iterations" in overrides:
        spec["iterations"] = overrides["iterations"]
    if "label_budget" in overrides:
        spec["loop"] = {**spec["loop"], "label_budget": overrides["label_budget"]}
    if "policy" in overrides:  # PolicyConfig fields, e.g. {"train_freq": 2}
        spec["loop"] = {**spec["loop"], "policy": overrides["policy"]}
    if "steps" in overrides:
        spec["loop"] = {**spec["loop"], "policy_timesteps": overrides["steps"]}
    return spec


def run_settings(variant: str, overrides: dict[str, Any], *, workers: str, eval_episodes: int) -> dict[str, Any]:
    """What a row's ``settings`` records: everything that decides its figures besides the seed, code and machine."""
    return {
        "initial_rollouts": INITIAL_ROLLOUTS,
        "workers": workers,
        "eval_episodes": eval_episodes,
        **variant_spec(variant, overrides),
    }


def resume_key(variant: str, seed: int, settings: dict[str, Any], code: str, cpu: dict[str, Any]) -> str:
    """Rows with the same key measured the same thing: a rerun skips them (``--out`` elsewhere measures again)."""
    return json.dumps([variant, seed, settings, code, cpu], sort_keys=True)


def recorded_keys(path: Path) -> set[str]:
    return {
        resume_key(row["variant"], row["seed"], row.get("settings", {}), row.get("commit", ""), row.get("machine", {}))
        for row in recorded(path)
    }


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def run_one(
    variant: str,
    seed: int,
    overrides: dict[str, Any],
    *,
    pids: dict[str, int],
    eval_episodes: int = 0,
    workers: str = "split",
) -> dict[str, Any]:
    from django.core.management import call_command

    from accounts.models import Role, User
    from accounts.services import user_create
    from labeling.models import Clip
    from labeling.services import project_create
    from trainer import loop
    from trainer.models import PolicyCheckpoint, Run, RunKind

    spec = variant_spec(variant, overrides)
    researcher = User.objects.filter(username="bench-researcher").first() or user_create(
        username="bench-researcher", password="bench-password-1", role=Role.RESEARCHER
    )
    slug = f"loop-{variant}-s{seed}-{int(time.time())}"
    project = project_create(
        created_by=researcher,
        name=slug,
        slug=slug,
        env_id="Pendulum-v1",
        overlap=1,
        feedback_mode=spec["feedback_mode"],
    )
    project.loop_settings = {"retrain_on_ranking": False, "seed": seed, **spec["loop"]}
    project.save()
    budget = spec["loop"]["label_budget"]

    load_before = _load_average()
    cpu = CpuClock(pids)
    started = time.monotonic()
    clips_run = loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        created_by=researcher,
        params={"rollouts": INITIAL_ROLLOUTS, "queries": budget, "seed": seed, "render": "queried"},
    )
    _wait(lambda: Run.objects.get(pk=clips_run.pk).is_finished, 600, "the initial clips")
    clips_run.refresh_from_db()
    if clips_run.state != "done":
        raise RuntimeError(f"generate_clips failed: {clips_run.error}")
    clips_done = time.monotonic()

    annotators: threading.Thread | None = None
    annotator_errors: list[BaseException] = []
    url = f"http://127.0.0.1:{PORT}"
    if variant == "heron":
        call_command(
            "simulate_annotators",
            project=slug,
            url=url,
            annotators=1,
            ranking="angle_sq > angular_velocity_sq > torque_sq",
            seed=seed,
        )
    first = loop.iteration_create(project=project, created_by=researcher, count=spec["iterations"])
    if variant == "pairwise":
        labels = spec["iterations"] * budget

        def annotate() -> None:
            try:
                call_command(
                    "simulate_annotators",
                    project=slug,
                    url=url,
                    annotators=2,
                    labels=labels,
                    wait_seconds=900,
                    seed=seed,
                )
            except BaseException as error:  # reported by the waiting loop below instead of hanging it
                annotator_errors.append(error)

        annotators = threading.Thread(target=annotate, daemon=True)
        annotators.start()

    def all_done():
        if annotator_errors:
            raise RuntimeError(f"the simulated annotators failed: {annotator_errors[0]}")
        iterations = list(Run.objects.filter(project=project, kind=RunKind.ITERATION).order_by("number"))
        if len(iterations) == spec["iterations"] and all(it.is_finished for it in iterations):
            return iterations
        failed = [it for it in iterations if it.state in ("failed", "cancelled")]
        if failed:
            raise RuntimeError(f"iteration {failed[0].number} {failed[0].state}: {failed[0].error}")
        return None

    iterations = _wait(all_done, 3600, "the iterations")
    wall = time.monotonic() - started
    cpu_seconds = cpu.elapsed()

    def drained() -> bool:
        """The render queue's share of the loop is done: every policy video and every example clip sent."""
        if PolicyCheckpoint.objects.filter(project=project, video_episode__queued=True).exists():
            return False
        sent = [pk for it in iterations for pk in (it.results.get("rendering") or {}).get("rendering_later") or []]
        return not Clip.objects.filter(pk__in=sent, render_status__in=("pending", "rendering")).exists()

    _wait(drained, 600, "the render queue's work")
    drained_wall = time.monotonic() - started
    drained_cpu = cpu.elapsed()
    if annotators is not None:
        annotators.join(timeout=60)
    rows = []
    for it in iterations:
        policy = PolicyCheckpoint.objects.get(run=it)
        rows.append(
            {
                "iteration": it.number,
                "labels": it.labels_used,
                "timesteps": policy.timesteps,
                "true_mean": policy.evaluation["true_mean"],
                "true_std": policy.evaluation["true_std"],
                "learned_mean": policy.evaluation.get("learned_mean"),
                "train_seconds": round(policy.train_seconds, 1),
                "reward_val_accuracy": it.results.get("training_reward", {}).get("val_accuracy"),
                "reward_holdout_spearman": it.results.get("training_reward", {}).get("holdout_spearman"),
                "step_seconds": {
                    step: (it.results.get(step) or {}).get("seconds")
                    for step in it.steps
                    if (it.results.get(step) or {}).get("seconds") is not None
                }
                or None,
            }
        )
    if eval_episodes:  # after the clock: the curve's fixed start states, the same for every variant and seed
        from bench.loop.curve import evaluate

        for it, row in zip(iterations, rows, strict=True):
            returns = evaluate(PolicyCheckpoint.objects.get(run=it), project, eval_episodes)
            row["fixed_eval_mean"] = float(sum(returns) / len(returns))
            row["fixed_eval_returns"] = returns
    final = rows[-1]
    reached = [row["labels"] for row in rows if row["true_mean"] >= -200]
    return {
        "variant": variant,
        "seed": seed,
        "commit": commit(),
        "machine": machine(),
        "project": slug,
        "first_iteration": first.number,
        "wall_seconds": round(wall, 1),
        # CPU seconds of the worker (with its ffmpeg children), gunicorn and the driver over the same span;
        # the load averages say how busy the (shared) machine was.
        "cpu_seconds": cpu_seconds,
        "load_average": {"before": load_before, "after": _load_average()},
        # Until the render queue's share (policy videos, example clips) is done as well: all the loop's work.
        "drained": {"wall_seconds": round(drained_wall, 1), "cpu_seconds": drained_cpu},
        "initial_clips_seconds": round(clips_done - started, 1),
        "final_true_mean": final["true_mean"],
        "final_true_std": final["true_std"],
        "final_fixed_eval_mean": final.get("fixed_eval_mean"),
        "final_timesteps": final["timesteps"],
        "final_labels": final["labels"],
        "labels_to_minus_200": min(reached) if variant == "pairwise" and reached else None,
        "iterations": rows,
        "settings": run_settings(variant, overrides, workers=workers, eval_episodes=eval_episodes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override the variant's number of iterations")
    parser.add_argument("--label-budget", type=int, help="override the variant's labels per iteration")
    parser.add_argument("--policy", type=json.loads, help="PolicyConfig overrides as JSON, e.g. '{\"train_freq\": 2}'")
    parser.add_argument("--steps", type=int, help="override the SAC steps per iteration (policy_timesteps)")
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=0,
        help="after the clock, evaluate each iteration's policy on this many of bench/loop/curve.py's fixed starts",
    )
    parser.add_argument(
        "--workers",
        choices=("split", "one"),
        default="split",
        help="split: a worker per queue (default, render with two processes, train), as docker/compose.yaml "
        "(default); one: a single worker on all queues, as make demo",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-loop.jsonl")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the training worker under cProfile (var/bench-loop-logs/worker.prof), print where time went",
    )
    args = parser.parse_args()
    overrides = {
        key: value
        for key, value in (
            ("iterations", args.iterations),
            ("label_budget", args.label_budget),
            ("policy", args.policy),
            ("steps", args.steps),
        )
        if value is not None
    }
    # Resumable: each seed's row is appended as it finishes, and a rerun skips what is recorded.
    settings = run_settings(args.variant, overrides, workers=args.workers, eval_episodes=args.eval_episodes)
    code, cpu = commit(), machine()
    done = recorded_keys(args.out)
    if all(resume_key(args.variant, seed, settings, code, cpu) in done for seed in args.seeds):
        print(f"{args.variant}: seeds {args.seeds} recorded already in {args.out}")
        return
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get(
        "CELERY_BROKER_URL", ""
    ).startswith("redis"):
        sys.exit("bench/loop needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://…")
    media = os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench-media"))  # before Django reads it
    _setup_django()
    from config.celery import app

    app.control.purge()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logs = ROOT / "var" / "bench-loop-logs"
    logs.mkdir(parents=True, exist_ok=True)
    common_env = {"MEDIA_ROOT": media}
    profile = logs / "worker.prof"
    # cProfile writes its file when the worker exits (a warm shutdown on SIGTERM is a SystemExit it handles).
    profiler = ["-m", "cProfile", "-o", str(profile)] if args.profile else []
    # As docker/compose.yaml: a worker per queue, the render queue's with two processes, so that a policy video or
    # an example clip rendered beside the loop does not hold up the loop's own rollouts.
    pools = {"solo": ["--pool", "solo"], "two": ["--pool", "prefork", "--concurrency", "2"]}
    queues = (
        {"worker": ("default,render,train", "solo")}
        if args.workers == "one"
        else {
            "default_worker": ("default", "solo"),
            "render_worker": ("render", "two"),
            "train_worker": ("train", "solo"),
        }
    )
    workers = {}
    for name, (names, pool) in queues.items():
        workers[name] = _start(
            [
                sys.executable,
                *(profiler if name in ("train_worker", "worker") else []),
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                names,
                *pools[pool],
                "-n",
                f"bench-{name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            logs / f"{name}.log",
            **common_env,
        )
    server = _start(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{PORT}",
            "-w",
            "2",
            "--log-level",
            "warning",
        ],
        logs / "gunicorn.log",
        API_TOKEN_RATE="1000/minute",
        **common_env,
    )
    try:
        _wait_for_server()
        for seed in args.seeds:
            if resume_key(args.variant, seed, settings, code, cpu) in done:
                print(f"{args.variant} seed {seed}: recorded already in {args.out} (same code, machine, settings)")
                continue
            result = run_one(
                args.variant,
                seed,
                overrides,
                pids={**{name: process.pid for name, process in workers.items()}, "server": server.pid},
                eval_episodes=args.eval_episodes,
                workers=args.workers,
            )
            with args.out.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(
                f"{args.variant} seed {seed}: true return {result['final_true_mean']:.1f} ± "
                f"{result['final_true_std']:.1f} after {result['final_timesteps']} steps, "
                f"{result['final_labels']} labels, {result['wall_seconds']:.0f} s end to end, "
                f"fixed-start return {result['final_fixed_eval_mean']}, "
                f"CPU {result['cpu_seconds']['total']:.0f} s {result['cpu_seconds']} (load {result['load_average']}); "
                f"render queue drained at {result['drained']['wall_seconds']:.0f} s, "
                f"CPU {result['drained']['cpu_seconds']['total']:.0f} s",
                flush=True,
            )
            for row in result["iterations"]:
                print(f"    {row}", flush=True)
    finally:
        _stop(server)
        for process in workers.values():
            _stop(process)
    if args.profile and profile.exists():
        import pstats

        print(f"worker profile ({profile}), by cumulative time:")
        pstats.Stats(str(profile)).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
