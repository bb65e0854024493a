"""Train a Stable-Baselines3 policy on a (learned) reward, continuing from a snapshot if given.

Snapshots hold SB3's ``.save()`` zip and the replay buffer as ``.npz`` bytes. Loading never goes
through ``SAC.load``/``PPO.load``: those deserialise the zip's ``data`` entry with cloudpickle,
i.e. run whatever code a tampered snapshot contains. Instead a fresh model is built from the
stored config and only the weight files are read, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import set_random_seed

from trainer.core.policy.config import PolicyConfig
from trainer.core.policy.replay import relabel, replay_buffer_to_bytes, restore_replay_buffer
from trainer.core.policy.reward_wrapper import LearnedRewardWrapper, RewardFn

ProgressCallback = Callable[[float, str], None]
EnvFactory = Callable[[], gymnasium.Env]

# Progress is reported whenever this much of the run or this much time has passed since the last report.
_PROGRESS_FRACTION_STEP = 0.01
_PROGRESS_INTERVAL_S = 1.0
# Episodes averaged in progress messages.
_RECENT_EPISODES = 10


@dataclass(frozen=True)
class PolicySnapshot:
    """A trained policy, everything needed to continue training it or to act with it."""

    algorithm: str
    """``sac`` or ``ppo``."""
    model_zip: bytes
    """SB3's ``model.save()`` zip; only its weight files are ever read back (see module docstring)."""
    replay_buffer: bytes | None
    """SAC's replay buffer as ``.npz`` bytes (:mod:`trainer.core.policy.replay`); None for PPO."""
    num_timesteps: int
    """Environment steps trained so far, over this and all the runs it continued."""
    config: dict[str, Any]
    """The :class:`PolicyConfig` it was trained with, as :meth:`PolicyConfig.to_dict`."""


def train_policy(
    *,
    env_factory: EnvFactory,
    config: PolicyConfig,
    timesteps: int,
    reward_fn: RewardFn | None,
    previous: PolicySnapshot | None = None,
    progress: ProgressCallback | None = None,
) -> PolicySnapshot:
    """Train for ``timesteps`` environment steps and return the new snapshot.

    - ``env_factory`` builds one environment (with its time limit); it is wrapped in a
      :class:`LearnedRewardWrapper` when ``reward_fn`` is given, else the env's own reward is used.
    - ``previous`` continues that snapshot: its weights, optimiser states, SAC's entropy coefficient,
      replay buffer (relabelled with ``reward_fn`` if ``config.relabel_replay_buffer``) and timestep
      count, so SAC's ``learning_starts`` warm-up happens only once over all runs.
    - ``progress(fraction, message)`` is called about every 1 % of the run or every second, and once
      with 1.0 at the end; it doubles as the worker's heartbeat. An exception it raises (e.g. to
      cancel) propagates out of this function.

    PPO trains whole updates of ``config.ppo_n_steps`` steps, so it may run a few more steps than asked.
    Same config, seed, previous snapshot, reward and thread count give bitwise-identical results on the CPU.
    """
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    start = 0 if previous is None else previous.num_timesteps
    saved_threads = torch.get_num_threads()
    env = env_factory()
    try:
        torch.set_num_threads(config.num_threads)
        if reward_fn is not None:
            env = LearnedRewardWrapper(env, reward_fn)
        algorithm = config.resolved_algorithm(env.action_space)
        if previous is not None and previous.algorithm != algorithm:
            raise ValueError(f"cannot continue a {previous.algorithm!r} snapshot with algorithm {algorithm!r}")
        device = config.resolved_device()
        seed = _run_seed(config.seed, start)
        # Seeds python, numpy and torch globally, so network initialisation and SB3's own draws repeat.
        set_random_seed(seed, using_cuda=device.type == "cuda")
        model = _build_model(algorithm, env, config, seed=seed, device=device)
        if previous is not None:
            _continue_from(model, previous, config, reward_fn)
        callback = None if progress is None else _ProgressCallback(progress, start=start, timesteps=timesteps)
        with _unchecked_distributions():
            model.learn(timesteps, callback=callback, reset_num_timesteps=False)
        snapshot = _snapshot(model, algorithm, config)
    finally:
        torch.set_num_threads(saved_threads)
        env.close()
    if progress is not None:
        progress(1.0, f"trained {snapshot.num_timesteps - start} steps ({snapshot.num_timesteps} in total)")
    return snapshot


def load_model(snapshot: PolicySnapshot, env: gymnasium.Env, *, device: str | None = None) -> BaseAlgorithm:
    """The snapshot's policy, ready for ``model.predict``, loaded without unpickling anything.

    ``env`` only supplies the observation and action spaces (the caller keeps and closes it);
    ``device`` overrides the snapshot config's. The replay buffer is not loaded.
    """
    config = PolicyConfig.from_dict(snapshot.config)
    if device is not None:
        config = config.replace(device=device)
    algorithm = config.resolved_algorithm(env.action_space)
    if algorithm != snapshot.algorithm:
        raise ValueError(f"snapshot holds a {snapshot.algorithm!r} policy but the config resolves to {algorithm!r}")
    # Capacity 1: the buffer is never used here; the weights don't depend on it. fork_rng keeps
    # the throw-away initialisation from consuming the caller's global torch random stream.
    with torch.random.fork_rng(devices=[]):
        model = _build_model(algorithm, env, config.replace(buffer_size=1), seed=None, device=config.resolved_device())
    _load_weights(model, snapshot.model_zip)
    model.num_timesteps = snapshot.num_timesteps
    return model


# --- building and restoring ------------------------------------------------------------------


def _run_seed(seed: int, start: int) -> int:
    # Each continued run gets its own stream (a fixed seed would replay the same exploration noise and
    # environment starts every round), derived from the config seed and the cumulative step count.
    return int(np.random.SeedSequence([seed, start]).generate_state(1, np.uint32)[0])


def _build_model(
    algorithm: str, env: gymnasium.Env, config: PolicyConfig, *, seed: int | None, device: torch.device
) -> BaseAlgorithm:
    model = _sb3_model(algorithm, env, config, seed=seed, device=device)
    _speed_up(model)
    return model


def _speed_up(model: BaseAlgorithm) -> None:
    """Remove per-step overhead that does not change what SAC/PPO compute (profile in bench/README.md).

    - Adam as one fused kernel per parameter group instead of a Python loop over tensors (SB3's default):
      the same update rule; with one gradient step per environment step the loop was ~20 % of SAC's time.
      (A fused Adam rounds differently from the loop, so a run is not bitwise equal to one from before this
      change; it stays deterministic.)
    - ``set_training_mode`` is a no-op when no layer behaves differently in training (no dropout, no batch
      norm: SB3's MLP policies): SB3 calls it twice per environment step, walking every module each time
      (~10 % of SAC's time).
    """
    ent_coef_optimizer = getattr(model, "ent_coef_optimizer", None)
    if ent_coef_optimizer is not None:  # SAC with a learned entropy coefficient: built by SB3, not configurable
        model.ent_coef_optimizer = torch.optim.Adam(  # type: ignore[attr-defined]
            [model.log_ent_coef],  # type: ignore[attr-defined]
            lr=ent_coef_optimizer.param_groups[0]["lr"],
            fused=True,
        )
    if not any(isinstance(module, _MODE_DEPENDENT) for module in model.policy.modules()):
        model.policy.set_training_mode = _training_mode_unchanged  # type: ignore[method-assign]


@contextmanager
def _unchecked_distributions() -> Iterator[None]:
    """Build torch distributions without checking their parameters, for the duration of training.

    SB3 builds a Normal for every action and twice per gradient step, and torch checks each one's mean and scale
    (a few small tensor ops): ~5 % of a SAC step here (bench/README.md). SB3's scale is exp of a clamped log, so
    the check cannot fail on finite weights; the values computed are the same either way."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


# Layers whose output depends on module.train()/eval().
_MODE_DEPENDENT = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)


def _training_mode_unchanged(mode: bool) -> None:
    return None


def _sb3_model(
    algorithm: str, env: gymnasium.Env, config: PolicyConfig, *, seed: int | None, device: torch.device
) -> BaseAlgorithm:
    # fused Adam: see _speed_up.
    policy_kwargs = {"net_arch": list(config.net_arch), "optimizer_kwargs": {"fused": True}}
    if algorithm == "sac":
        return SAC(
            "MlpPolicy",
            env,
            learning_rate=config.learning_rate,
            buffer_size=config.buffer_size,
            learning_starts=config.learning_starts,
            batch_size=config.batch_size,
            tau=config.tau,
            gamma=config.gamma,
            train_freq=config.train_freq,
            gradient_steps=config.gradient_steps,
            ent_coef=config.ent_coef,
            policy_kwargs=policy_kwargs,
            seed=seed,
            device=device,
            verbose=0,
        )
    if algorithm == "ppo":
        return PPO(
            "MlpPolicy",
            env,
            learning_rate=config.learning_rate,
            n_steps=config.ppo_n_steps,
            batch_size=config.ppo_batch_size,
            n_epochs=config.ppo_n_epochs,
            gamma=config.gamma,
            ent_coef=0.0 if isinstance(config.ent_coef, str) else float(config.ent_coef),
            policy_kwargs=policy_kwargs,
            seed=seed,
            device=device,
            verbose=0,
        )
    raise ValueError(f"unknown algorithm {algorithm!r}")


def _load_weights(model: BaseAlgorithm, model_zip: bytes) -> None:
    """Weights, optimiser states and SAC's entropy coefficient from a ``model.save()`` zip.

    ``load_data=False`` skips the cloudpickled ``data`` entry; the ``.pth`` entries are read with
    ``torch.load(weights_only=True)``, which can only produce tensors and plain containers.
    """
    try:
        _, params, variables = load_from_zip_file(io.BytesIO(model_zip), load_data=False, device=model.device)
        model.set_parameters(params, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"the snapshot's weights don't fit a model built from its config: {error}") from error
    log_ent_coef = getattr(model, "log_ent_coef", None)
    if isinstance(log_ent_coef, torch.Tensor):
        # Not a module's state: set_parameters skips it. Copy in place, since the entropy
        # optimiser holds a reference to this very tensor.
        saved = (variables or {}).get("log_ent_coef")
        if not isinstance(saved, torch.Tensor) or saved.shape != log_ent_coef.shape:
            raise ValueError("the snapshot lacks SAC's log_ent_coef (was it trained with a fixed ent_coef?)")
        with torch.no_grad():
            log_ent_coef.copy_(saved)


def _continue_from(
    model: BaseAlgorithm, previous: PolicySnapshot, config: PolicyConfig, reward_fn: RewardFn | None
) -> None:
    _load_weights(model, previous.model_zip)
    # With reset_num_timesteps=False, learn() counts on from here: learning_starts is not repeated.
    model.num_timesteps = previous.num_timesteps
    if not isinstance(model, SAC) or previous.replay_buffer is None:
        return
    assert model.replay_buffer is not None  # built by SAC's constructor
    restore_replay_buffer(model.replay_buffer, previous.replay_buffer)
    # Without a learned reward there is nothing to relabel with: the env's reward can't be
    # recomputed from stored features.
    if reward_fn is not None and config.relabel_replay_buffer:
        relabel(model.replay_buffer, reward_fn, unscale_action=model.policy.unscale_action)


def _snapshot(model: BaseAlgorithm, algorithm: str, config: PolicyConfig) -> PolicySnapshot:
    out = io.BytesIO()
    model.save(out)
    replay = None
    if isinstance(model, SAC) and model.replay_buffer is not None:
        replay = replay_buffer_to_bytes(model.replay_buffer)
    return PolicySnapshot(
        algorithm=algorithm,
        model_zip=out.getvalue(),
        replay_buffer=replay,
        num_timesteps=int(model.num_timesteps),
        config=config.to_dict(),
    )


# --- progress --------------------------------------------------------------------------------


class _ProgressCallback(BaseCallback):
    """Reports the fraction of the run done, with recent episode returns, at most about every 1 %
    of the run but at least every second (so a slow run still sends heartbeats)."""

    def __init__(self, progress: ProgressCallback, *, start: int, timesteps: int) -> None:
        super().__init__()
        self._progress = progress
        self._start = start
        self._timesteps = timesteps
        self._last_fraction = 0.0
        self._last_time = time.monotonic()
        self._true_return = 0.0
        self._returns: deque[float] = deque(maxlen=_RECENT_EPISODES)
        self._true_returns: deque[float] = deque(maxlen=_RECENT_EPISODES)

    def _on_training_start(self) -> None:
        self._report(0.0)

    def _on_step(self) -> bool:
        self._track_episodes(self.locals.get("infos", ()))
        fraction = min((self.num_timesteps - self._start) / self._timesteps, 1.0)
        now = time.monotonic()
        if fraction - self._last_fraction >= _PROGRESS_FRACTION_STEP or now - self._last_time >= _PROGRESS_INTERVAL_S:
            self._report(fraction)
        return True

    def _track_episodes(self, infos: Any) -> None:
        for info in infos:  # one per environment; training uses a single one
            self._true_return += float(info.get("true_reward", math.nan))
            episode: Mapping[str, Any] | None = info.get("episode")  # added by SB3's Monitor at episode end
            if episode is not None:
                self._returns.append(float(episode["r"]))
                self._true_returns.append(self._true_return)
                self._true_return = 0.0

    def _report(self, fraction: float) -> None:
        self._last_fraction, self._last_time = fraction, time.monotonic()
        message = f"{self.num_timesteps - self._start}/{self._timesteps} steps"
        if self._returns:
            message += f"; mean return of the last {len(self._returns)} episodes {np.mean(self._returns):.1f}"
            true_mean = float(np.mean(self._true_returns))
            if not math.isnan(true_mean):  # only known when training on a learned reward
                message += f" (true reward {true_mean:.1f})"
        self._progress(fraction, message)
