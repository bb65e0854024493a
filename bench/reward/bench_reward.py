"""Benchmark: reward-model training time and quality on 10 000 Pendulum-v1 preference pairs.

Run from the repository root:

    .venv/bin/python -m bench.reward.bench_reward            # default RewardModelConfig
    .venv/bin/python -m bench.reward.bench_reward --help     # sizes, threads, precision ...

Data (all seeded): Pendulum-v1 episodes of 200 steps from a uniformly random policy and from a
noisy energy-based swing-up controller (random gains and noise levels), cut into 50-step clips
with per-step features [cos θ, sin θ, θdot, torque]; the true return of a clip is the sum of the
environment's rewards. Random pairs of distinct clips are labelled by the sign of their true
return difference (a perfect labeller, except that returns closer than --tie-threshold are a tie,
target 0.5, which accuracy ignores), so validation accuracy is ranking accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from trainer.core.reward import FeatureLayout, PreferenceDataset, RewardModelConfig, train_reward_model

CLIP_LENGTH = 50
EPISODE_LENGTH = 200  # Pendulum-v1's time limit
MAX_TORQUE = 2.0


@dataclass(frozen=True)
class PendulumClips:
    features: np.ndarray  # (n_clips, 50, 4) float32: cos θ, sin θ, θdot, torque
    true_returns: np.ndarray  # (n_clips,) float64
    policies: np.ndarray  # (n_clips,) str: which behaviour produced the clip


def swing_up_torque(observation: np.ndarray, energy_gain: float, rng: np.random.Generator, noise: float) -> float:
    """Energy shaping far from upright, PD control near it, plus Gaussian torque noise.

    Pendulum-v1 (m = l = 1, g = 10, θ = 0 upright): E = θdot²/6 + 5 cos θ, E_upright = 5.
    Pumping with torque ∝ (E_upright - E)·θdot adds energy when below the top.
    """
    cos_theta, sin_theta, theta_dot = observation
    theta = np.arctan2(sin_theta, cos_theta)
    if cos_theta > 0.85:
        torque = -10.0 * theta - 2.0 * theta_dot
    else:
        energy = theta_dot**2 / 6.0 + 5.0 * cos_theta
        torque = energy_gain * (5.0 - energy) * np.sign(theta_dot if theta_dot != 0 else 1.0)
    return float(np.clip(torque + noise * rng.normal(), -MAX_TORQUE, MAX_TORQUE))


def generate_pendulum_clips(n_episodes: int, seed: int, random_share: float = 0.4) -> PendulumClips:
    import gymnasium as gym

    rng = np.random.default_rng(seed)
    env = gym.make("Pendulum-v1")
    features, returns, policies = [], [], []
    for _ in range(n_episodes):
        observation, _ = env.reset(seed=int(rng.integers(2**31)))
        is_random = rng.random() < random_share
        energy_gain = float(rng.uniform(0.5, 3.0))
        noise = float(rng.choice([0.0, 0.3, 1.0, 2.0]))
        steps = np.zeros((EPISODE_LENGTH, 4), dtype=np.float32)
        rewards = np.zeros(EPISODE_LENGTH)
        for t in range(EPISODE_LENGTH):
            if is_random:
                torque = float(rng.uniform(-MAX_TORQUE, MAX_TORQUE))
            else:
                torque = swing_up_torque(observation, energy_gain, rng, noise)
            steps[t, :3], steps[t, 3] = observation, torque
            observation, reward, _, _, _ = env.step(np.array([torque], dtype=np.float32))
            rewards[t] = reward
        for start in range(0, EPISODE_LENGTH, CLIP_LENGTH):
            features.append(steps[start : start + CLIP_LENGTH])
            returns.append(rewards[start : start + CLIP_LENGTH].sum())
            policies.append("random" if is_random else f"swing_up(noise={noise})")
    env.close()
    return PendulumClips(np.stack(features), np.asarray(returns), np.asarray(policies))


def label_pairs(
    true_returns: np.ndarray, n_pairs: int, seed: int, tie_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random pairs of distinct clips; target 1 when the first has the higher return,
    0.5 ("equally good") when the returns differ by less than ``tie_threshold``."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(true_returns), size=n_pairs)
    # Offset in [1, n) so that the second clip is never the first.
    second = (first + rng.integers(1, len(true_returns), size=n_pairs)) % len(true_returns)
    pairs = np.stack([first, second], axis=1).astype(np.int64)
    difference = true_returns[first] - true_returns[second]
    targets = np.where(np.abs(difference) < tie_threshold, 0.5, difference > 0).astype(np.float32)
    return pairs, targets


def main() -> None:
    defaults = RewardModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=500, help="200-step episodes, 4 clips each")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument(
        "--tie-threshold", type=float, default=0.5, help="|return difference| below which a pair is a tie"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="RewardModelConfig.seed")
    parser.add_argument("--threads", type=int, default=None, help="RewardModelConfig.num_threads")
    parser.add_argument("--precision", default=defaults.training_precision, choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--ensemble-size", type=int, default=defaults.ensemble_size)
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    clips = generate_pendulum_clips(args.episodes, args.data_seed)
    pairs, targets = label_pairs(clips.true_returns, args.pairs, args.data_seed + 1, args.tie_threshold)
    generation_s = time.perf_counter() - started
    dataset = PreferenceDataset(
        clips.features,
        pairs,
        targets,
        layout=FeatureLayout(
            feature_dim=4, obs_dim=3, action_dim=1, feature_names=("cos_theta", "sin_theta", "theta_dot", "torque")
        ),
    )
    config = RewardModelConfig(
        seed=args.seed,
        num_threads=args.threads,
        training_precision=args.precision,
        ensemble_size=args.ensemble_size,
        max_epochs=args.max_epochs,
    )

    def progress(fraction: float, message: str) -> None:
        if not args.quiet:
            print(f"  [{fraction:5.1%}] {message}", flush=True)

    load_before = os.getloadavg()
    result = train_reward_model(dataset, config, true_returns=clips.true_returns, progress=progress)
    metrics = result.metrics
    epoch_seconds = [row.seconds for row in result.history]
    summary = {
        "pairs": dataset.n_pairs,
        "clips": dataset.n_clips,
        "clip_length": dataset.clip_length,
        "feature_dim": dataset.feature_dim,
        "tie_share": round(float(np.mean(targets == 0.5)), 4),
        "true_return_range": [float(clips.true_returns.min()), float(clips.true_returns.max())],
        "data_generation_s": round(generation_s, 2),
        "train_wall_s": round(metrics["wall_time_s"], 2),
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "stopped_early": metrics["stopped_early"],
        "median_epoch_s": round(float(np.median(epoch_seconds)), 3),
        "epoch_s": [round(seconds, 2) for seconds in epoch_seconds],
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "val_loss": round(metrics["val_loss"], 4),
        "initial_val_accuracy": round(metrics["initial_val_accuracy"], 4),
        "spearman_held_out": round(metrics["spearman"], 4),
        "pearson_held_out": round(metrics["pearson"], 4),
        "correlation_clips": metrics["correlation_clips"],
        "correlation_clip_set": metrics["correlation_clip_set"],
        "torch_threads": metrics["num_threads"],
        "training_precision": metrics["training_precision"],
        "ensemble_size": config.ensemble_size,
        "hidden_sizes": list(config.hidden_sizes),
        "batch_size": config.batch_size,
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
