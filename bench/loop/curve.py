"""bench/loop/curve: label- and step-efficiency curves of the loop on Pendulum-v1, resumable, honest budgets.

Issue 13. Every variant runs the same schedule through the platform's own steps (project, generate_clips run,
loop iterations: preferences → reward ensemble → SAC → rollouts → questions), called in this process as a worker
would call them (the pattern of ``bench/mujoco/run.py``: no broker, no HTTP, SQLite):

  pairwise          a B-Pref teacher answers every published question through the same lease/judgment
                    services the REST API calls; iteration k trains on the labels of iterations < k, so ONE run
                    gives the whole label curve (10, 20, 40, 80, 160 cumulative labels by default);
  pairwise-noisy    the same with B-Pref's "Noisy" teacher (β = 1);
  pairwise-mistake  "Mistake" (ε = 0.1);
  pairwise-equal    "Equal" (answers equal when the clips' returns differ by less than ``EQUAL_THRESHOLD``);
  heron             one factor ranking (angle > angular velocity > torque), no pairwise labels;
  true              SAC on the environment's true reward: the ceiling. Same pool, rollouts and SAC steps.

Honest step accounting: every environment step the platform simulates is counted per iteration — the initial
clip pool, SAC training, the rollouts that make new clips — and the evaluation steps are reported separately.
All variants simulate exactly the same number of steps up to each iteration.

Evaluation: after every iteration the policy plays ``--episodes`` (50) deterministic episodes from the same fixed
list of reset seeds (``EVAL_SEED``), identical for every variant, seed and iteration.

Each finished (variant, seed, config) is appended to ``bench/loop/results/curve.jsonl`` at once and a rerun skips
what is recorded, so the set is gathered in parts:

    .venv/bin/python -m bench.loop.curve --variants pairwise true --seeds 0 1 2 3 4
    .venv/bin/python -m bench.loop.summary          # tables (IQM, mean, bootstrap CIs) and PNG plots

Rendering is stubbed out (clips are marked ready without video): a synthetic teacher never looks at video,
and rendering would dominate the cost. ``bench/loop/run.py`` remains the end-to-end path over HTTP.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.inprocess import drive  # noqa: E402  (after the path setup above)
from bench.machine import commit, machine  # noqa: E402

INITIAL_ROLLOUTS = 24  # × 4 clips of 50 steps: random play and the scripted swing-up at four noise levels
EPISODE_STEPS = 200  # Pendulum-v1's time limit
EVAL_SEED = 20_261_207  # the fixed evaluation start states: the same reset seeds for every variant and seed
EQUAL_THRESHOLD = 15.0  # B-Pref "Equal": 0.1 × the mean |return| of a 50-step clip of the initial pool (≈ 150)
RANKING = [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]

TEACHERS: dict[str, dict[str, float]] = {
    "pairwise": {},
    "pairwise-noisy": {"beta": 1.0},
    "pairwise-mistake": {"epsilon": 0.1},
    "pairwise-equal": {"equal_threshold": EQUAL_THRESHOLD},
}
VARIANTS = (*TEACHERS, "heron", "true")


def _setup(database: str) -> None:
    os.environ.setdefault("DATABASE_URL", database)
    os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench-loop-curve-media"))
    import django

    django.setup()
    import torch

    # As a worker does (config/celery.py, TORCH_NUM_THREADS = 1): with torch's default of one thread per core,
    # reward training spins on the second core while another seed runs there, and CPU seconds double.
    torch.set_num_threads(1)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from labeling.models import Clip, RenderStatus
    from trainer import clip_pipeline, loop, loop_steps

    loop._send_step = lambda *args: None  # no broker: drive() runs each step here

    def mark_ready(clip: Clip) -> bool:  # the synthetic teacher never watches video
        Clip.objects.filter(pk=clip.pk).update(render_status=RenderStatus.READY)
        return True

    clip_pipeline.render_clip = mark_ready
    loop_steps.render_clip = mark_ready


def answer_all(project, annotator, teacher, rng: np.random.Generator) -> int:
    """Answer every open question with the teacher, through the services the API's endpoints call."""
    from labeling.assignment import judgment_submit, lease_next_query, lease_skip
    from trainer.management.commands.simulate_annotators import TrueRewards

    rewards = TrueRewards()
    answered = 0
    while True:
        lease = lease_next_query(project=project, annotator=annotator).lease
        if lease is None:
            return answered
        left, right = lease.shown_clips()
        answer = teacher.answer(rewards.for_clip(left.pk), rewards.for_clip(right.pk), rng)
        if answer == "skip":
            lease_skip(token=lease.token, annotator=annotator)
            continue
        choice = {"a": "left", "b": "right", "equal": "equal"}[answer]
        judgment_submit(
            query_id=lease.query_id,
            annotator=annotator,
            choice=choice,
            lease_token=lease.token,
            client_id=uuid.uuid4(),
        )
        answered += 1


def eval_seeds(episodes: int) -> list[int]:
    rng = np.random.default_rng(EVAL_SEED)
    return [int(s) for s in rng.integers(0, 2**31, size=episodes)]


def evaluate(checkpoint, project, episodes: int) -> list[float]:
    """True returns of the checkpoint's deterministic policy from the fixed evaluation start states."""
    from trainer.artefacts import env_factory, policy_snapshot
    from trainer.core.policy import evaluate_policy, load_model

    make_env = env_factory(project)
    env = make_env()
    try:
        model = load_model(policy_snapshot(checkpoint, replay_buffer=False), env)
    finally:
        env.close()
    # evaluate_policy draws one reset seed per episode from rng; a fixed generator gives the same list everywhere.
    result = evaluate_policy(
        model, env_factory=make_env, episodes=episodes, rng=np.random.default_rng(EVAL_SEED), reward_fn=None
    )
    return [float(r) for r in result.true_returns]


def reward_diagnostics(iteration) -> dict[str, Any]:
    """How well the iteration's reward model orders ALL clips of the pool by true return (Spearman), and how
    its members disagree: the measurements behind bench/README.md's investigation."""
    from scipy import stats

    from labeling.models import Clip
    from trainer.artefacts import reward_ensemble
    from trainer.reward_training import clip_features

    if iteration.reward_model is None:
        return {}
    clips = list(Clip.objects.filter(project=iteration.project).select_related("rollout").order_by("id"))
    features, true, _ = clip_features(clips)
    ensemble = reward_ensemble(iteration.reward_model)
    members = ensemble.predict_member_returns(features)  # (members, clips)
    spread = members.std(axis=0) / max(float(np.std(ensemble.predict_returns(features))), 1e-9)
    return {
        "pool_clips": len(clips),
        "pool_spearman": float(stats.spearmanr(ensemble.predict_returns(features), true).statistic),
        "member_spearman": [float(stats.spearmanr(m, true).statistic) for m in members],
        "member_disagreement": float(spread.mean()),
        "reward_stats": ensemble.reward_stats().to_dict(),
    }


def _project(variant: str, seed: int, config: dict[str, Any]):
    from accounts.models import Role, User
    from accounts.services import user_create
    from labeling.services import project_create
    from trainer.core.loop_settings import DEFAULT_REWARD_CONFIG

    researcher = User.objects.filter(username="bench-researcher").first() or user_create(
        username="bench-researcher", password="bench-password-1", role=Role.RESEARCHER
    )
    slug = f"curve-{variant}-s{seed}-{uuid.uuid4().hex[:8]}"
    project = project_create(
        created_by=researcher,
        name=slug,
        slug=slug,
        env_id="Pendulum-v1",
        overlap=1,
        feedback_mode="pairwise" if variant in TEACHERS else "ranking",
    )
    project.loop_settings = {
        "retrain_on_ranking": False,
        "seed": seed,
        "policy_timesteps": config["steps_per_iteration"],
        "label_budget": 0,
        "preference_cap": 5_000,
        "max_queries_per_clip": 8,  # 8 rollouts × 4 clips: room for 80 questions in one iteration
        # The bench evaluates on its own fixed start states; --policy adds PolicyConfig overrides.
        "policy": {**config.get("policy", {}), "eval_episodes": 1},
        **({"policy_reward": "true"} if variant == "true" else {}),
        **(
            {"reward_config": {**DEFAULT_REWARD_CONFIG, **config["reward_config"]}}
            if config.get("reward_config")
            else {}
        ),
    }
    project.save()
    return researcher, project


def run_one(
    variant: str, seed: int, config: dict[str, Any], *, sigmas: dict[str, float] | None = None
) -> dict[str, Any]:
    """One seed of one variant; ``sigmas`` are the HERON ranking's per-factor margins (default: the preset's)."""
    from accounts.services import user_create
    from labeling.rankings import ranking_submit
    from labeling.services import membership_add
    from trainer import loop
    from trainer.core.oracle import BPrefTeacher
    from trainer.models import PolicyCheckpoint, RunKind

    started, cpu_started = time.monotonic(), time.process_time()
    researcher, project = _project(variant, seed, config)
    labels: list[int] = config["labels"]
    pairwise = variant in TEACHERS
    clips = loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        created_by=researcher,
        params={
            "rollouts": INITIAL_ROLLOUTS,
            "queries": labels[0] if pairwise else 0,
            "seed": seed,
            "render": "queried",
        },
    )
    clips = drive(clips.pk)
    if clips.state != "done":
        raise RuntimeError(f"clip generation failed: {clips.error}")
    annotator = user_create(username=f"bench-annotator-{project.slug}", password="bench-password-1")
    membership_add(project=project, user=annotator)
    if variant == "heron":
        ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas=sigmas or {})
    teacher = BPrefTeacher(**TEACHERS[variant]) if pairwise else None
    teacher_rng = np.random.default_rng([seed, 77])

    steps = {"initial_pool": INITIAL_ROLLOUTS * EPISODE_STEPS, "policy_training": 0, "rollouts": 0}
    rows = []
    for index in range(config["iterations"]):
        budget = 0
        if pairwise:
            answer_all(project, annotator, teacher, teacher_rng)
            # Questions this iteration publishes, answered before the next one: the next cumulative target.
            following = labels[index + 1] if index + 1 < len(labels) else labels[-1]
            budget = following - labels[index] if index + 1 < len(labels) else 1
            budget = max(budget, 1)
        iteration = loop.iteration_create(
            project=project, created_by=researcher, overrides={"label_budget": budget} if pairwise else None
        )
        iteration = drive(iteration.pk)
        if iteration.state != "done":
            raise RuntimeError(f"iteration {iteration.number} {iteration.state}: {iteration.error}")
        policy = PolicyCheckpoint.objects.get(run=iteration)
        steps["policy_training"] = policy.timesteps
        steps["rollouts"] += iteration.results.get("rolling_out", {}).get("rollouts", 0) * EPISODE_STEPS
        returns = evaluate(policy, project, config["episodes"])
        reward = iteration.results.get("training_reward", {})
        rows.append(
            {
                "iteration": iteration.number,
                "labels": iteration.labels_used if pairwise else 0,
                "env_steps": sum(steps.values()),
                "env_steps_by_kind": dict(steps),
                "evaluation_steps": config["episodes"] * EPISODE_STEPS,
                "true_mean": float(np.mean(returns)),
                "true_returns": returns,
                "reward_val_accuracy": reward.get("val_accuracy"),
                "reward_holdout_spearman": reward.get("holdout_spearman"),
                "reward_epochs": reward.get("epochs_run"),
                "preference_pairs": iteration.results.get("building_preferences", {}).get("pairs"),
                "train_seconds": round(policy.train_seconds, 1),
                # CPU seconds of each of the iteration's steps (preferences, reward, policy, rollouts, …).
                "step_cpu_seconds": {
                    step: round(float(result["cpu_seconds"]), 3)
                    for step, result in iteration.results.items()
                    if isinstance(result, dict) and result.get("cpu_seconds") is not None
                },
                **reward_diagnostics(iteration),
            }
        )
        print(
            f"  {variant} seed {seed} iteration {iteration.number}: labels {rows[-1]['labels']}, "
            f"steps {rows[-1]['env_steps']}, true return {rows[-1]['true_mean']:.1f}",
            flush=True,
        )
    return {
        "iterations": rows,
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }


def config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["pairwise", "true", "heron"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 20, 40, 80, 160], help="cumulative labels")
    parser.add_argument("--steps-per-iteration", type=int, default=4_000, help="SAC steps per iteration")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per policy")
    parser.add_argument("--reward-config", type=json.loads, default=None, help="reward-model overrides (JSON)")
    parser.add_argument("--policy", type=json.loads, default=None, help="PolicyConfig overrides (JSON)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "loop" / "results" / "curve.jsonl")
    parser.add_argument("--database", default=f"sqlite:///{ROOT / 'var' / f'bench-loop-curve-{os.getpid()}.sqlite3'}")
    args = parser.parse_args()
    if sorted(args.labels) != args.labels or args.labels[0] < 1:
        sys.exit("--labels must be increasing cumulative label counts ≥ 1")
    config = {
        "labels": args.labels,
        "iterations": len(args.labels),
        "steps_per_iteration": args.steps_per_iteration,
        "episodes": args.episodes,
        "initial_rollouts": INITIAL_ROLLOUTS,
        "eval_seed": EVAL_SEED,
        **({"reward_config": args.reward_config} if args.reward_config else {}),
        **({"policy": args.policy} if args.policy else {}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _setup(args.database)
    done = {(row["variant"], row["seed"], config_key(row["config"])) for row in recorded(args.out)}
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed, config_key(config)) in done:
                print(f"{variant} seed {seed}: recorded already", flush=True)
                continue
            result = run_one(variant, seed, config)
            row = {
                "variant": variant,
                "seed": seed,
                "config": config,
                "commit": commit(),
                "machine": machine(),
                **result,
            }
            with args.out.open("a") as handle:  # one line per finished seed: a rerun resumes after it
                handle.write(json.dumps(row) + "\n")
            final = row["iterations"][-1]
            print(
                f"{variant} seed {seed}: true return {final['true_mean']:.1f} after {final['env_steps']} steps "
                f"({row['wall_seconds']} s wall)",
                flush=True,
            )


if __name__ == "__main__":
    assert math.isfinite(EQUAL_THRESHOLD)
    main()
