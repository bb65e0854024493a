"""Evaluate a policy: episode returns under the environment's true reward and the learned one.

Comparing the two shows whether the policy learned what people wanted (true return) or found a
way to please the reward model alone (learned return up, true return flat: reward hacking).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from trainer.core.policy.reward_wrapper import RewardFn, discrete_n, features_of

# Reset seeds are drawn from [0, this): any value the environments accept.
_SEED_BOUND = 2**31


@dataclass(frozen=True)
class EvaluationResult:
    """Per-episode returns of an evaluation, in episode order."""

    true_returns: list[float]
    """Sum of the environment's own rewards."""
    learned_returns: list[float] | None
    """Sum of the (raw, un-normalised) learned rewards; None when evaluated without a reward model."""
    episode_lengths: list[int]
    """Steps of each episode."""

    @property
    def true_mean(self) -> float:
        return float(np.mean(self.true_returns))

    @property
    def true_std(self) -> float:
        return float(np.std(self.true_returns))

    @property
    def learned_mean(self) -> float | None:
        return None if self.learned_returns is None else float(np.mean(self.learned_returns))

    @property
    def learned_std(self) -> float | None:
        return None if self.learned_returns is None else float(np.std(self.learned_returns))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (no NaN: missing learned returns are None)."""
        return {
            "episodes": len(self.true_returns),
            "true_returns": list(self.true_returns),
            "true_mean": self.true_mean,
            "true_std": self.true_std,
            "learned_returns": None if self.learned_returns is None else list(self.learned_returns),
            "learned_mean": self.learned_mean,
            "learned_std": self.learned_std,
            "episode_lengths": list(self.episode_lengths),
        }


def env_action(action: np.ndarray, action_space: gymnasium.Space) -> Any:
    """A ``model.predict`` action in the form the environment takes (a plain int for Discrete)."""
    if isinstance(action_space, gymnasium.spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=action_space.dtype).reshape(action_space.shape)


def evaluate_policy(
    model: BaseAlgorithm,
    *,
    env_factory: Callable[[], gymnasium.Env],
    episodes: int,
    rng: np.random.Generator,
    reward_fn: RewardFn | None,
    deterministic: bool = True,
) -> EvaluationResult:
    """Play ``episodes`` episodes, each from ``env.reset(seed=<drawn from rng>)``.

    Pass the *raw* reward function (``ensemble_reward_fn(..., normalized=False)``) so learned
    returns are comparable across reward models. ``deterministic=False`` samples actions from
    torch's global random stream, which ``rng`` does not control.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    true_returns: list[float] = []
    learned_returns: list[float] = []
    lengths: list[int] = []
    env = env_factory()
    try:
        for _ in range(episodes):
            seed = int(rng.integers(0, _SEED_BOUND))
            true_return, features = _play_episode(model, env, seed=seed, deterministic=deterministic)
            true_returns.append(true_return)
            lengths.append(len(features))
            if reward_fn is not None:
                # One call per episode: far cheaper than one per step, same sum up to rounding.
                learned_returns.append(float(np.sum(reward_fn(np.stack(features)), dtype=np.float64)))
    finally:
        env.close()
    return EvaluationResult(
        true_returns=true_returns,
        learned_returns=learned_returns if reward_fn is not None else None,
        episode_lengths=lengths,
    )


def _play_episode(
    model: BaseAlgorithm, env: gymnasium.Env, *, seed: int, deterministic: bool
) -> tuple[float, list[np.ndarray]]:
    """True return and per-step features of one episode (the env's time limit ends it)."""
    obs, _ = env.reset(seed=seed)
    true_return = 0.0
    features: list[np.ndarray] = []
    done = False
    while not done:
        predicted, _ = model.predict(obs, deterministic=deterministic)
        action = env_action(predicted, env.action_space)
        features.append(features_of(obs, action, discrete_n(env.action_space)))
        obs, reward, terminated, truncated, _ = env.step(action)
        true_return += float(reward)
        done = terminated or truncated
    if not math.isfinite(true_return):
        raise ValueError(f"episode from seed {seed} has a non-finite return {true_return}")
    return true_return, features
