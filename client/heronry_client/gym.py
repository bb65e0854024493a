"""The learned reward as a Gymnasium wrapper: every step's reward becomes the model's reward for
``[observation before the step, action]`` (the environment's own reward stays in ``info["true_reward"]``)."""

from __future__ import annotations

from typing import Any, SupportsFloat

try:
    import gymnasium
except ImportError as error:
    raise ImportError(f"heronry_client.gym needs gymnasium ({error}): pip install 'heronry-client[gym]'") from error
import numpy as np

from .reward import RewardModel


def discrete_n(action_space: gymnasium.Space[Any]) -> int | None:
    return int(action_space.n) if isinstance(action_space, gymnasium.spaces.Discrete) else None


class LearnedReward(gymnasium.Wrapper[Any, Any, Any, Any]):
    """Replaces the reward with ``model`` (normalised, as in the platform's loop, unless ``normalized=False``)."""

    def __init__(self, env: gymnasium.Env[Any, Any], model: RewardModel, *, normalized: bool = True) -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, gymnasium.spaces.Box):
            raise ValueError(f"learned rewards need a Box observation space, got {env.observation_space!r}")
        self.model = model
        self.normalized = normalized
        self._n_discrete = discrete_n(env.action_space)
        self._last_obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = np.array(obs, copy=True)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._last_obs is None:
            raise RuntimeError("LearnedReward: call reset() before step()")
        learned = float(
            self.model.reward(
                self._last_obs[np.newaxis],
                np.asarray(action)[np.newaxis],
                normalized=self.normalized,
                n_discrete=self._n_discrete,
            )[0]
        )
        obs, true_reward, terminated, truncated, info = self.env.step(action)
        self._last_obs = np.array(obs, copy=True)
        info["true_reward"] = float(true_reward)
        info["learned_reward"] = learned
        return obs, learned, terminated, truncated, info
