"""bench/mujoco: HERON on MuJoCo through the platform — one factor ranking, then SAC on the learned reward.

Issue 11, point 6. On Hopper-v5 (``specs/hopper.yaml``: forward progress, staying healthy, torso height, control
effort), per seed:

  heron   a project from the shipped spec; a generate_clips run (random and near-zero-torque policies, factor
          totals only: no video is needed to rank); ONE factor ranking (forward progress > healthy > torso height
          > control effort, σ 1) through the ranking service; one loop iteration in ranking mode: HERON
          preference set → reward ensemble → SAC for ``--steps`` environment steps on the learned reward →
          evaluation on the true reward;
  true    the same project and the same SAC budget on the environment's true reward (the ceiling);
  random  a uniformly random policy, evaluated the same way (the floor).

Every step runs through the platform's own code (specs, runs, steps, storage, the Django-free core); only the
broker is left out: each step is called in this process, as a worker would call it. Evaluation: ``--episodes``
episodes (default 20) whose start states are seeded by (seed, iteration), so the variants of one seed share
them. Torch uses CUDA when one is present (TORCH_DEVICE=auto) — the same code a GPU ``train`` worker runs.

    .venv/bin/python -m bench.mujoco.run --variants heron true random --seeds 0 1 2 --steps 30000

Each finished (variant, seed) is appended to ``var/bench-mujoco.jsonl`` at once and skipped by a rerun, so the
set can be gathered in parts. ``--report`` prints the Markdown table of what is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.inprocess import drive  # noqa: E402  (after the path setup above)

os.environ.setdefault("TORCH_DEVICE", "auto")
os.environ.setdefault("MUJOCO_GL", "egl")

SPEC = ROOT / "specs" / "hopper.yaml"
RANKING = [["forward_progress"], ["healthy"], ["torso_height"], ["control_cost"]]
INITIAL_ROLLOUTS = 24  # × 6 clips of 50 steps (300-step episodes): random play and near-zero torques


def _setup(database: str) -> None:
    os.environ.setdefault("DATABASE_URL", database)
    os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench-mujoco-media"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from trainer import loop

    loop._send_step = lambda *args: None  # type: ignore[assignment]  # no broker: drive() runs each step here


def _project(variant: str, seed: int, steps: int, episodes: int):
    from accounts.models import Role, User
    from accounts.services import user_create
    from trainer.core.project_spec import load_spec_text
    from trainer.project_specs import project_create_from_spec

    researcher = User.objects.filter(username="bench-researcher").first() or user_create(
        username="bench-researcher", password="bench-password-1", role=Role.RESEARCHER
    )
    spec = load_spec_text(SPEC.read_text())
    spec["feedback"] = {"modes": ["ranking"]}
    spec["loop"] = {
        **spec.get("loop", {}),
        "seed": seed,
        "retrain_on_ranking": False,
        "label_budget": 0,
        "policy_timesteps": steps,
        "policy_reward": "true" if variant == "true" else "learned",
        "preference_cap": 20_000,
        "rollouts": 2,
        "policy": {"eval_episodes": episodes},
    }
    slug = f"hopper-{variant}-s{seed}-{int(time.time())}"
    return researcher, project_create_from_spec(created_by=researcher, spec=spec, slug=slug)


def run_learning(variant: str, seed: int, steps: int, episodes: int) -> dict[str, Any]:
    from accounts.services import user_create
    from labeling.rankings import ranking_submit
    from labeling.services import membership_add
    from trainer import loop
    from trainer.models import PolicyCheckpoint, RunKind

    started, cpu_started = time.monotonic(), time.process_time()
    researcher, project = _project(variant, seed, steps, episodes)
    clips = loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        created_by=researcher,
        params={"rollouts": INITIAL_ROLLOUTS, "queries": 0, "seed": seed, "render": "none"},
    )
    clips = drive(clips.pk)
    if clips.state != "done":
        raise RuntimeError(f"clip generation failed: {clips.error}")
    clips_seconds = time.monotonic() - started
    if variant == "heron":
        annotator = user_create(username=f"bench-annotator-{project.slug}", password="bench-password-1")
        membership_add(project=project, user=annotator)
        ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas={})
    iteration = loop.iteration_create(project=project, created_by=researcher)
    iteration = drive(iteration.pk)
    if iteration.state != "done":
        raise RuntimeError(f"iteration failed: {iteration.error}")
    policy = PolicyCheckpoint.objects.get(run=iteration)
    reward = iteration.results.get("training_reward", {})
    episode_steps = project.episode_steps or 0
    return {
        "true_mean": policy.evaluation["true_mean"],
        "true_std": policy.evaluation["true_std"],
        "true_returns": policy.evaluation.get("true_returns"),
        "learned_mean": policy.evaluation.get("learned_mean"),
        "reward_val_accuracy": reward.get("val_accuracy"),
        "reward_holdout_spearman": reward.get("holdout_spearman"),
        "preference_pairs": iteration.results.get("building_preferences", {}).get("pairs"),
        "env_steps": {
            "initial_pool": INITIAL_ROLLOUTS * episode_steps,
            "policy_training": policy.timesteps,
            "evaluation": episodes * episode_steps,
        },
        "policy_train_seconds": round(policy.train_seconds, 1),
        "initial_clips_seconds": round(clips_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }


def run_random(seed: int, episodes: int) -> dict[str, Any]:
    """A uniformly random policy on the spec's environment, over the same seeded start states as evaluation."""
    from trainer.core.project_spec import load_spec_text

    started, cpu_started = time.monotonic(), time.process_time()
    spec = load_spec_text(SPEC.read_text())
    environment = spec["environment"]
    import gymnasium

    env = gymnasium.make(
        environment["id"], max_episode_steps=environment["episode_steps"], **environment.get("kwargs", {})
    )
    # The start states the platform's evaluation of iteration 1 draws (trainer.loop_steps._rng(…, 4) and
    # trainer.core.policy.evaluation: one reset seed per episode below 2**31); the actions from a stream of their own.
    starts = np.random.default_rng([seed, 1, 4])
    env.action_space.seed(int(np.random.default_rng([seed, 1, 99]).integers(0, 2**31)))
    returns = []
    try:
        for _ in range(episodes):
            env.reset(seed=int(starts.integers(0, 2**31)))
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return {
        "true_mean": float(np.mean(returns)),
        "true_std": float(np.std(returns)),
        "true_returns": returns,
        "env_steps": {"evaluation": episodes * environment["episode_steps"]},
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }


def _recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t interval (n - 1 degrees of freedom)."""
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return float(array.mean()), float("nan")
    half = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / np.sqrt(len(array)))
    return float(array.mean()), half


def report(path: Path) -> str:
    rows = _recorded(path)
    lines = [
        "| variant | steps | seeds | true return, mean ± 95 % CI over seeds | per seed (mean of its episodes) "
        "| wall s / seed | CPU s / seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in ("heron", "true", "random"):
        for steps in sorted({row["steps"] for row in rows if row["variant"] == variant}):
            chosen = [row for row in rows if row["variant"] == variant and row["steps"] == steps]
            means = [row["true_mean"] for row in chosen]
            mean, half = _t_interval(means)
            per_seed = ", ".join(
                f"{row['seed']}: {row['true_mean']:.0f}" for row in sorted(chosen, key=lambda r: r["seed"])
            )
            wall = np.mean([row["wall_seconds"] for row in chosen])
            cpu = np.mean([row["cpu_seconds"] for row in chosen])
            lines.append(
                f"| {variant} | {steps or '—'} | {len(chosen)} | {mean:.1f} ± {half:.1f} | {per_seed} "
                f"| {wall:.0f} | {cpu:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants", nargs="+", choices=["heron", "true", "random"], default=["heron", "true", "random"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30_000, help="SAC environment steps per learning run")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-mujoco.jsonl")
    parser.add_argument("--database", default=f"sqlite:///{ROOT / 'var' / 'bench-mujoco.sqlite3'}")
    parser.add_argument("--report", action="store_true", help="print the table of recorded results and stop")
    args = parser.parse_args()
    if args.report:
        print(report(args.out))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _setup(args.database)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    done = {(row["variant"], row["seed"], row["steps"], row["episodes"]) for row in _recorded(args.out)}
    for seed in args.seeds:
        for variant in args.variants:
            steps = 0 if variant == "random" else args.steps
            if (variant, seed, steps, args.episodes) in done:
                print(f"{variant} seed {seed}: recorded already")
                continue
            result = (
                run_random(seed, args.episodes)
                if variant == "random"
                else run_learning(variant, seed, args.steps, args.episodes)
            )
            row = {
                "variant": variant,
                "seed": seed,
                "steps": steps,
                "episodes": args.episodes,
                "device": device,
                **result,
            }
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(
                f"{variant} seed {seed}: true return {row['true_mean']:.1f} ± {row['true_std']:.1f} "
                f"({row['wall_seconds']} s wall, {row['cpu_seconds']} s CPU)",
                flush=True,
            )
    print(report(args.out))


if __name__ == "__main__":
    main()
