"""The learned reward as a Stable-Baselines3 ``VecEnvWrapper``: rewards of all sub-environments in one batch."""

from __future__ import annotations

import numpy as np

try:
    import gymnasium
    from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
except ImportError as error:
    raise ImportError(
        f"heronry_client.sb3 needs gymnasium and stable-baselines3 ({error}): pip install 'heronry-client[sb3]'"
    ) from error

from .reward import RewardModel


class VecLearnedReward(VecEnvWrapper):
    """Replaces each step's rewards with ``model``'s for ``[observation before the step, action]``; the
    environments' own rewards go to ``info["true_reward"]``. Needs a Box observation space (no dict spaces)."""

    def __init__(self, venv: VecEnv, model: RewardModel, *, normalized: bool = True) -> None:
        super().__init__(venv)
        if not isinstance(venv.observation_space, gymnasium.spaces.Box):
            raise ValueError(f"learned rewards need a Box observation space, got {venv.observation_space!r}")
        space = venv.action_space
        self._n_discrete = int(space.n) if isinstance(space, gymnasium.spaces.Discrete) else None
        self.model = model
        self.normalized = normalized
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._last_obs = np.array(obs, copy=True)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.array(actions, copy=True)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._last_obs is None or self._actions is None:
            raise RuntimeError("VecLearnedReward: reset() and step_async() come before step_wait()")
        obs, true_rewards, dones, infos = self.venv.step_wait()
        learned = self.model.reward(
            self._last_obs, self._actions, normalized=self.normalized, n_discrete=self._n_discrete
        )
        for info, true_reward, value in zip(infos, true_rewards, learned, strict=True):
            info["true_reward"] = float(true_reward)
            info["learned_reward"] = float(value)
        # After a done the VecEnv has already reset that sub-environment: obs is the next episode's first.
        self._last_obs = np.array(obs, copy=True)
        return obs, learned.astype(np.float32), dones, infos
