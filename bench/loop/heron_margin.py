"""bench/loop/heron_margin: what HERON's first reward model rewards on Pendulum-v1, by angle margin σ (issue 13).

For each (σ on the angle factor, seed): the curve's first HERON iteration (``bench/loop/curve.py``: initial pool,
the ranking angle > angular velocity > torque, reward ensemble, 4 000 SAC steps), then
  - the policy's true return on the curve's 50 fixed start states;
  - the learned and true returns of 200-step episodes of fixed behaviours from 10 start states: the scripted swing-up,
    spinning (full torque along the velocity), doing nothing, random play, and the iteration's own policy;
  - the learned per-step reward on a grid of angle × angular velocity (no torque).
Rows are appended to ``bench/loop/results/heron-margin.jsonl`` (resumable per (σ, seed)).

    .venv/bin/python -m bench.loop.heron_margin --sigmas 1 0.25 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.loop import curve
from bench.machine import commit, machine

ANGLES = (0.0, 0.5, 1.0, 2.0, 3.14)
VELOCITIES = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)


def behaviours(model, rng: np.random.Generator) -> dict[str, Any]:
    import gymnasium

    from trainer.core.scripted import make_policy

    swing_up = make_policy("pendulum_swingup", gymnasium.make("Pendulum-v1").action_space)
    return {
        "swing_up": lambda obs: swing_up(obs, rng),
        "spin": lambda obs: np.array([2.0 if obs[2] >= 0 else -2.0], dtype=np.float32),
        "nothing": lambda obs: np.zeros(1, dtype=np.float32),
        "random": lambda obs: rng.uniform(-2.0, 2.0, size=1).astype(np.float32),
        "policy": lambda obs: model.predict(obs, deterministic=True)[0],
    }


def episode(ensemble, controller, seed: int) -> tuple[float, float, float]:
    """(learned return, true return, mean |θ̇|) of one 200-step episode; learned = sum over its four 50-step clips."""
    import gymnasium

    env = gymnasium.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    features, true_return = [], 0.0
    for _ in range(curve.EPISODE_STEPS):
        action = np.asarray(controller(obs), dtype=np.float32).reshape(1)
        features.append(np.concatenate([obs, action]))
        obs, reward, *_ = env.step(action)
        true_return += float(reward)
    steps = np.asarray(features, dtype=np.float32).reshape(4, 50, 4)
    return float(ensemble.predict_returns(steps).sum()), true_return, float(np.abs(steps[..., 2]).mean())


def measure(sigma: float, seed: int, episodes: int) -> dict[str, Any]:
    from trainer.artefacts import env_factory, policy_snapshot, reward_ensemble
    from trainer.core.policy import load_model
    from trainer.models import PolicyCheckpoint, RewardModel

    config = {
        "labels": [1],
        "iterations": 1,
        "steps_per_iteration": 4_000,
        "episodes": episodes,
        "initial_rollouts": curve.INITIAL_ROLLOUTS,
        "eval_seed": curve.EVAL_SEED,
    }
    result = curve.run_one("heron", seed, config, sigmas={"angle_sq": sigma})
    row = result["iterations"][0]
    checkpoint = PolicyCheckpoint.objects.latest("id")
    ensemble = reward_ensemble(RewardModel.objects.latest("id"))
    make_env = env_factory(checkpoint.project)
    model = load_model(policy_snapshot(checkpoint, replay_buffer=False), make_env())
    rng = np.random.default_rng([seed, 5])
    table = {}
    for name, controller in behaviours(model, rng).items():
        runs = np.array([episode(ensemble, controller, start) for start in range(10)])
        table[name] = {"learned": runs[:, 0].mean(), "true": runs[:, 1].mean(), "mean_abs_velocity": runs[:, 2].mean()}
    grid = np.zeros((len(ANGLES), len(VELOCITIES), 1, 4), dtype=np.float32)
    for i, angle in enumerate(ANGLES):
        for j, velocity in enumerate(VELOCITIES):
            grid[i, j, 0] = [np.cos(angle), np.sin(angle), velocity, 0.0]
    per_step = ensemble.predict_returns(grid.reshape(-1, 1, 4)).reshape(len(ANGLES), len(VELOCITIES))
    return {
        "sigma_angle": sigma,
        "seed": seed,
        "true_mean": row["true_mean"],
        "pool_spearman": row.get("pool_spearman"),
        "reward_epochs": row["reward_epochs"],
        "preference_pairs": row["preference_pairs"],
        "behaviours": {name: {k: round(float(v), 2) for k, v in values.items()} for name, values in table.items()},
        "grid": {"angles": ANGLES, "velocities": VELOCITIES, "reward": np.round(per_step, 3).tolist()},
        "cpu_seconds": result["cpu_seconds"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per σ: the first policy's return and motion, and what the first reward model says (means over seeds)."""
    lines = [
        "| σ on the angle | seeds | first policy's return (50 fixed starts), per seed | mean | policy's mean abs(θ̇) "
        "| learned return: swing-up / spin / nothing / the policy | learned reward per step at θ = 0 / 1 / 2 / π "
        "(θ̇ = 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for sigma in sorted({row["sigma_angle"] for row in rows}, reverse=True):
        group = sorted((row for row in rows if row["sigma_angle"] == sigma), key=lambda row: row["seed"])

        def mean(name: str, key: str, group: list[dict[str, Any]] = group) -> float:
            return float(np.mean([row["behaviours"][name][key] for row in group]))

        grid = np.mean([row["grid"]["reward"] for row in group], axis=0)
        zero_velocity = list(VELOCITIES).index(0.0)
        at = [grid[list(ANGLES).index(angle)][zero_velocity] for angle in (0.0, 1.0, 2.0, 3.14)]
        lines.append(
            f"| {sigma:g} | {len(group)} | "
            + ", ".join(f"{row['seed']}: {row['true_mean']:.0f}" for row in group)
            + f" | {np.mean([row['true_mean'] for row in group]):.1f} | {mean('policy', 'mean_abs_velocity'):.2f} | "
            + " / ".join(f"{mean(name, 'learned'):.1f}" for name in ("swing_up", "spin", "nothing", "policy"))
            + " | "
            + " / ".join(f"{value:.2f}" for value in at)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=curve.ROOT / "bench" / "loop" / "results" / "heron-margin.jsonl")
    parser.add_argument(
        "--database", default=f"sqlite:///{curve.ROOT / 'var' / f'bench-heron-margin-{os.getpid()}.sqlite3'}"
    )
    args = parser.parse_args()
    curve._setup(args.database)
    done = {(row["sigma_angle"], row["seed"]) for row in curve.recorded(args.out)}
    for seed in args.seeds:
        for sigma in args.sigmas:
            if (sigma, seed) in done:
                continue
            row = {**measure(sigma, seed, args.episodes), "commit": commit(), "machine": machine()}
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            spin, policy = row["behaviours"]["spin"], row["behaviours"]["policy"]
            print(
                f"σ {sigma} seed {seed}: return {row['true_mean']:.1f}; learned swing-up "
                f"{row['behaviours']['swing_up']['learned']:.1f}, spin {spin['learned']:.1f}, policy "
                f"{policy['learned']:.1f} (|θ̇| {policy['mean_abs_velocity']:.2f})",
                flush=True,
            )
    print(markdown(curve.recorded(args.out)))


if __name__ == "__main__":
    main()
