"""A trained SB3 policy as a :class:`trainer.core.scripted.Policy`, for recording rollouts and clips.

The action is the policy's deterministic one plus Gaussian noise from the ``rng`` passed in, so a
rollout is reproducible from its seed and ``rng`` alone (SB3's stochastic ``predict`` would draw
from torch's global random stream instead), and re-simulable from its stored actions.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm


class SB3Policy:
    """``model.predict(obs, deterministic=True)`` plus N(0, (noise·half-range)²) per action dimension,
    clipped to the Box; Discrete actions get no noise.

    ``noise`` is relative to the action range, like the scripted policies' noise levels, so one
    checkpoint at a few noise levels gives clips of graded quality.
    """

    def __init__(self, model: BaseAlgorithm, *, name: str, noise: float = 0.0) -> None:
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        self.name = name
        self.noise = float(noise)
        self._model = model
        space = model.action_space
        if isinstance(space, gymnasium.spaces.Box):
            self._low: np.ndarray | None = space.low.astype(np.float64)
            self._high: np.ndarray | None = space.high.astype(np.float64)
            self._noise_std = self.noise * (self._high - self._low) / 2.0
        elif isinstance(space, gymnasium.spaces.Discrete):
            self._low = self._high = None
        else:
            raise ValueError(f"SB3Policy supports Box and Discrete action spaces, got {space!r}")

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        action, _ = self._model.predict(obs, deterministic=True)
        if self._low is None or self._high is None:  # Discrete: the action index as is
            return np.asarray(action)
        action = np.asarray(action, dtype=np.float64)
        if self.noise > 0:
            action = action + rng.normal(0.0, self._noise_std)
        return np.clip(action, self._low, self._high)
