"""Where a policy-training step's time goes: SAC on Pendulum-v1 with a learned reward, as the loop runs it.

Runs ``train_policy`` (trainer/core, no Django, no Celery) twice like two loop iterations — the first from
scratch, the second continuing the first's snapshot with its replay buffer relabelled — under cProfile,
and prints wall and CPU seconds with the share of the big parts: SAC's gradient steps, the learned reward
inside the environment wrapper, the environment itself, action selection, relabelling and the snapshot.

    .venv/bin/python -m bench.loop.profile_policy --steps 10000 [--reward torch|numpy] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

# Functions whose cumulative time is reported, by (file suffix, function name).
PARTS = {
    "SAC gradient steps (SAC.train)": ("stable_baselines3/sac/sac.py", "train"),
    "collecting steps (collect_rollouts, all of the below)": ("off_policy_algorithm.py", "collect_rollouts"),
    "  action selection (policy.predict/_sample_action)": ("off_policy_algorithm.py", "_sample_action"),
    "  environment step (wrapper + Pendulum)": ("reward_wrapper.py", "step"),
    "    learned reward (reward_fn per step)": ("", "<reward>"),
    "  replay buffer add": ("buffers.py", "add"),
    "relabelling the replay buffer": ("replay.py", "relabel"),
    "snapshot (model.save + buffer to bytes)": ("training.py", "_snapshot"),
}


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    total = 0.0
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and filename.endswith(suffix):
            total += cumulative
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="environment steps per iteration")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--reward", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--top", type=int, default=0, help="also print the N most expensive functions")
    parser.add_argument("--no-profile", action="store_true", help="time only (cProfile adds ~30 %% overhead)")
    args = parser.parse_args()

    import numpy as np

    from trainer.core import envs
    from trainer.core.policy import PolicyConfig, ensemble_reward_fn, train_policy
    from trainer.core.reward import MeanStd, RewardEnsemble, RewardModelConfig
    from trainer.core.reward.data import FeatureLayout

    # A reward model of the loop's default shape (3 members, 64-64); its weights don't change the cost.
    config = RewardModelConfig(hidden_sizes=(64, 64), ensemble_size=3, seed=0)
    rng = np.random.default_rng(0)
    ensemble = RewardEnsemble(
        config,
        FeatureLayout(feature_dim=4, obs_dim=3, action_dim=1),
        feature_stats=MeanStd(np.zeros(4, np.float32), rng.uniform(0.5, 2.0, 4).astype(np.float32)),
        reward_stats=MeanStd(np.float32(0.1), np.float32(2.0)),
    ).eval()
    reward_fn = ensemble_reward_fn(ensemble, normalized=True) if args.reward == "numpy" else ensemble.normalized_reward
    calls = {"n": 0, "seconds": 0.0}

    def timed_reward(features: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return reward_fn(features)
        finally:
            calls["n"] += 1
            calls["seconds"] += time.perf_counter() - started

    def env_factory():
        return envs.make_env("Pendulum-v1", max_episode_steps=200)

    policy_config = PolicyConfig(seed=0)
    profiler = cProfile.Profile()
    wall = time.perf_counter()
    cpu = time.process_time()
    previous = None
    per_iteration = []
    for _ in range(args.iterations):
        started, started_cpu = time.perf_counter(), time.process_time()
        if not args.no_profile:
            profiler.enable()
        previous = train_policy(
            env_factory=env_factory,
            config=policy_config,
            timesteps=args.steps,
            reward_fn=timed_reward,
            previous=previous,
        )
        profiler.disable()
        per_iteration.append((time.perf_counter() - started, time.process_time() - started_cpu))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"load average {os.getloadavg()[0]:.2f}; reward via {args.reward}; {args.steps} steps x {args.iterations}")
    for index, (w, c) in enumerate(per_iteration):
        print(f"  iteration {index + 1}: wall {w:.1f} s, CPU {c:.1f} s ({args.steps / w:.0f} steps/s)")
    print(f"total: wall {wall:.1f} s, CPU {cpu:.1f} s")
    print(
        f"learned reward: {calls['n']} calls, {calls['seconds']:.2f} s, "
        f"{1e6 * calls['seconds'] / max(calls['n'], 1):.0f} µs per call (timed outside the profiler's share)"
    )
    if args.no_profile:
        return
    stats = pstats.Stats(profiler)
    profiled = sum(timing[3] for timing in stats.stats.values() if timing[3] > 0) and stats.total_tt  # type: ignore[attr-defined]
    print(f"profiled total {profiled:.1f} s (cProfile's own overhead included)")
    for label, (suffix, name) in PARTS.items():
        if name == "<reward>":
            seconds = _cumulative(stats, "profile_policy.py", "timed_reward")
        else:
            seconds = _cumulative(stats, suffix, name)
        print(f"  {label:<58} {seconds:7.1f} s  {100 * seconds / profiled:5.1f} %")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
