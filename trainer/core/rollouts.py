"""Rollouts: run a policy, record everything needed to score, re-simulate and render it, and store it.

A rollout is fully determined by (environment id, constructor kwargs, reset seed, actions), so stored
rollouts keep the actions and re-simulate everything else on demand (videos, features).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from trainer.core.envs import (
    EnvPreset,
    action_space_info,
    effective_env_kwargs,
    env_action,
    factor_values,
    get_preset,
    make_env,
)
from trainer.core.scripted import Policy, ResettablePolicy

NPZ_FORMAT_VERSION = 1
_ARRAY_NAMES = ("actions", "observations", "factors", "rewards")


@dataclass
class RolloutData:
    env_id: str
    env_kwargs: dict[str, Any]
    seed: int
    policy: str
    actions: np.ndarray  # (T, A) exactly as passed to env.step; a Discrete action is (T, 1) int64, its index
    observations: np.ndarray  # (T+1, O), row 0 is the reset observation
    factors: np.ndarray  # (T, K) in the preset's factor order
    rewards: np.ndarray  # (T,) the environment's own reward
    terminated: bool
    truncated: bool
    # {"kind": "discrete", "n": N} or {"kind": "box", "shape": [...]}; None in rollouts stored before it was
    # recorded (all Box). Reward features one-hot a discrete action, so they need N.
    action_space: dict[str, Any] | None = None

    @property
    def discrete_actions(self) -> int | None:
        """N for a Discrete action space, else None."""
        if self.action_space and self.action_space.get("kind") == "discrete":
            return int(self.action_space["n"])
        return None

    @property
    def n_steps(self) -> int:
        return len(self.actions)

    @property
    def true_return(self) -> float:
        return float(self.rewards.sum())


def _as_env_action(action: np.ndarray, space: gymnasium.Space) -> np.ndarray:
    # Cast to the action space's dtype before stepping so that the stored actions are bit-for-bit
    # what the environment saw and re-simulation reproduces the rollout exactly. A Discrete action is
    # stored as one int64 column (its index); env_action turns the row back into the int env.step takes.
    if isinstance(space, gymnasium.spaces.Discrete):
        return np.asarray(action, dtype=np.int64).reshape(-1)[:1]
    return np.asarray(action, dtype=space.dtype).reshape(-1)


def run_rollout(
    env_id: str,
    *,
    policy: Policy,
    seed: int,
    steps: int,
    rng: np.random.Generator,
    env_kwargs: Mapping[str, Any] | None = None,
    task: EnvPreset | None = None,
) -> RolloutData:
    """Run ``policy`` from ``env.reset(seed=seed)`` for ``steps`` steps or until the episode ends.

    The factors are ``task``'s (a project's, ``envs.task_definition``), else the preset's."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    preset = task or get_preset(env_id)
    kwargs = effective_env_kwargs(env_id, env_kwargs)
    if isinstance(policy, ResettablePolicy):
        policy.reset()

    actions: list[np.ndarray] = []
    factors: list[np.ndarray] = []
    rewards: list[float] = []
    env = make_env(env_id, max_episode_steps=steps, **kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        observations = [obs]
        space = env.action_space
        space_info = action_space_info(space)
        terminated = truncated = False
        while len(actions) < steps and not (terminated or truncated):
            action = _as_env_action(policy(obs, rng), space)
            next_obs, reward, terminated, truncated, info = env.step(env_action(action, space))
            actions.append(action)
            factors.append(factor_values(preset, obs, action, next_obs, info, float(reward)))
            rewards.append(float(reward))
            observations.append(next_obs)
            obs = next_obs
    finally:
        env.close()

    return RolloutData(
        env_id=env_id,
        env_kwargs=kwargs,
        seed=seed,
        policy=policy.name,
        actions=np.stack(actions),
        observations=np.stack(observations),
        factors=np.stack(factors),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminated=bool(terminated),
        truncated=bool(truncated),
        action_space=space_info,
    )


def resimulate(
    env_id: str,
    *,
    seed: int,
    actions: np.ndarray,
    env_kwargs: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Replay ``actions`` from ``env.reset(seed=seed)``; returns the observations, shape (T+1, O)."""
    env = make_env(env_id, max_episode_steps=max(len(actions), 1), **effective_env_kwargs(env_id, env_kwargs))
    try:
        obs, _ = env.reset(seed=seed)
        observations = [obs]
        for step, action in enumerate(actions):
            obs, _, terminated, _, _ = env.step(env_action(action, env.action_space))
            observations.append(obs)
            if terminated and step < len(actions) - 1:
                raise ValueError(f"episode terminated at step {step}, before the {len(actions)} actions ran out")
    finally:
        env.close()
    return np.stack(observations)


# --- storage ---------------------------------------------------------------------------------------


def save_npz(data: RolloutData) -> bytes:
    """Serialise a rollout to compressed ``.npz`` bytes; metadata is one JSON string, never a pickle."""
    metadata = {
        "format_version": NPZ_FORMAT_VERSION,
        "env_id": data.env_id,
        "env_kwargs": data.env_kwargs,
        "seed": int(data.seed),
        "policy": data.policy,
        "terminated": bool(data.terminated),
        "truncated": bool(data.truncated),
    }
    if data.action_space is not None:
        metadata["action_space"] = data.action_space
    try:
        metadata_json = json.dumps(metadata, sort_keys=True)
    except TypeError as error:
        raise ValueError(f"rollout metadata must be JSON-serialisable (check env_kwargs): {error}") from None
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        metadata=np.array([metadata_json]),
        actions=data.actions,
        observations=data.observations,
        factors=data.factors,
        rewards=data.rewards,
    )
    return buffer.getvalue()


def _read_metadata(archive: Mapping[str, np.ndarray]) -> dict[str, Any]:
    raw = archive["metadata"]
    if raw.shape != (1,) or raw.dtype.kind != "U":
        raise ValueError("rollout npz: 'metadata' must be a one-element string array")
    try:
        metadata = json.loads(str(raw[0]))
    except json.JSONDecodeError as error:
        raise ValueError(f"rollout npz: metadata is not valid JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise ValueError("rollout npz: metadata must be a JSON object")
    if metadata.get("format_version") != NPZ_FORMAT_VERSION:
        raise ValueError(f"rollout npz: unsupported format_version {metadata.get('format_version')!r}")
    expected_types: dict[str, type | tuple[type, ...]] = {
        "env_id": str,
        "env_kwargs": dict,
        "seed": int,
        "policy": str,
        "terminated": bool,
        "truncated": bool,
    }
    for key, expected in expected_types.items():
        if not isinstance(metadata.get(key), expected):
            raise ValueError(f"rollout npz: metadata field {key!r} is missing or has the wrong type")
    space = metadata.get("action_space")
    if space is not None and not _valid_action_space(space):
        raise ValueError("rollout npz: metadata field 'action_space' is not a box or discrete space")
    return metadata


def _valid_action_space(space: Any) -> bool:
    if not isinstance(space, dict):
        return False
    if space.get("kind") == "discrete":
        n = space.get("n")
        return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 100_000
    shape = space.get("shape")
    return space.get("kind") == "box" and isinstance(shape, list) and all(isinstance(d, int) for d in shape)


def _check_shapes(arrays: Mapping[str, np.ndarray]) -> None:
    actions, observations = arrays["actions"], arrays["observations"]
    factors, rewards = arrays["factors"], arrays["rewards"]
    if actions.ndim != 2 or observations.ndim != 2 or factors.ndim != 2 or rewards.ndim != 1:
        raise ValueError("rollout npz: expected 2-D actions/observations/factors and 1-D rewards")
    n_steps = len(actions)
    if len(observations) != n_steps + 1 or len(factors) != n_steps or len(rewards) != n_steps:
        raise ValueError(
            "rollout npz: inconsistent lengths "
            f"(actions {len(actions)}, observations {len(observations)}, "
            f"factors {len(factors)}, rewards {len(rewards)}; observations need one more row)"
        )
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu":
            raise ValueError(f"rollout npz: {name!r} must be numeric, got dtype {array.dtype}")


def load_npz(raw: bytes) -> RolloutData:
    """Inverse of ``save_npz``; raises ``ValueError`` for anything that is not a valid rollout."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            missing = [name for name in ("metadata", *_ARRAY_NAMES) if name not in archive.files]
            if missing:
                raise ValueError(f"rollout npz: missing arrays {missing}")
            arrays = {name: archive[name] for name in _ARRAY_NAMES}
            metadata = _read_metadata(archive)
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"rollout npz: cannot read archive ({error})") from None
    except ValueError as error:
        # np.load raises ValueError for object arrays under allow_pickle=False; keep our own messages.
        if str(error).startswith("rollout npz:"):
            raise
        raise ValueError(f"rollout npz: cannot read archive ({error})") from None
    _check_shapes(arrays)
    return RolloutData(
        env_id=metadata["env_id"],
        env_kwargs=metadata["env_kwargs"],
        seed=metadata["seed"],
        policy=metadata["policy"],
        actions=arrays["actions"],
        observations=arrays["observations"],
        factors=arrays["factors"],
        rewards=arrays["rewards"],
        terminated=metadata["terminated"],
        truncated=metadata["truncated"],
        action_space=metadata.get("action_space"),
    )


# --- segments --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length


def segments(n_steps: int, segment_steps: int) -> list[Segment]:
    """Consecutive, non-overlapping segments of exactly ``segment_steps``; a shorter tail is dropped."""
    if segment_steps < 1:
        raise ValueError(f"segment_steps must be positive, got {segment_steps}")
    return [Segment(start, segment_steps) for start in range(0, n_steps - segment_steps + 1, segment_steps)]


def _check_segment(seg: Segment, n_steps: int) -> None:
    if seg.start < 0 or seg.length < 1 or seg.stop > n_steps:
        raise ValueError(f"segment {seg} does not fit in a rollout of {n_steps} steps")


def segment_totals(factors: np.ndarray, seg: Segment) -> np.ndarray:
    """Per-factor sums over the segment, shape (K,)."""
    _check_segment(seg, len(factors))
    return np.asarray(factors[seg.start : seg.stop].sum(axis=0), dtype=np.float64)


def action_features(actions: np.ndarray, n_discrete: int | None) -> np.ndarray:
    """Actions as reward-model inputs: Box actions as they are, a Discrete index one-hot (N columns), so the
    model does not read an order into the indices. Shape (T, A) or (T, N), float32."""
    if n_discrete is None:
        return np.asarray(actions, dtype=np.float32)
    indices = np.asarray(actions).reshape(len(actions), -1)[:, 0].astype(np.int64)
    if np.any(indices < 0) or np.any(indices >= n_discrete):
        raise ValueError(f"discrete actions must be in [0, {n_discrete})")
    return np.eye(n_discrete, dtype=np.float32)[indices]


def segment_features(data: RolloutData, seg: Segment) -> np.ndarray:
    """Per-step model inputs ``[obs_t, action_t]`` for the segment, shape (length, O + A), float32 (a Discrete
    action one-hot, A = N)."""
    _check_segment(seg, data.n_steps)
    observations = data.observations[seg.start : seg.stop]
    actions = action_features(data.actions[seg.start : seg.stop], data.discrete_actions)
    return np.concatenate([observations, actions], axis=1).astype(np.float32)
