"""Replay buffers as ``.npz`` bytes (never pickles), and relabelling them with a new reward.

SB3's own ``save_replay_buffer`` pickles the whole buffer object, and unpickling runs arbitrary
code; here only the arrays travel, and they are loaded with ``allow_pickle=False`` into the buffer
of a freshly built model after their shapes have been checked against it.

SB3's off-policy algorithms store Box actions *scaled* to [-1, 1] (``OffPolicyAlgorithm
._sample_action`` returns the scaled action as the buffer action and steps the environment with
``policy.unscale_action`` of it), so :func:`relabel` has to unscale them to rebuild the features
the reward model saw.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from trainer.core.policy.reward_wrapper import RewardFn

REPLAY_FORMAT_VERSION = 1

_SCALARS = ("format_version", "buffer_size", "pos", "full")
# Per-transition arrays, each (buffer_size, n_envs, ...) in SB3's ReplayBuffer.
_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

# Transitions scored per reward_fn call when relabelling: bounds memory, no effect on results.
RELABEL_CHUNK = 65_536


def _check_supported(buffer: ReplayBuffer) -> None:
    if buffer.n_envs != 1:
        raise ValueError(f"only single-environment replay buffers are supported, got n_envs={buffer.n_envs}")
    if buffer.optimize_memory_usage:
        raise ValueError("replay buffers with optimize_memory_usage=True are not supported")


def filled(buffer: ReplayBuffer) -> int:
    """Number of stored transitions (rows ``[0, filled)`` hold data)."""
    return buffer.buffer_size if buffer.full else buffer.pos


def replay_buffer_to_bytes(buffer: ReplayBuffer) -> bytes:
    """The buffer's stored transitions, position and fill state as compressed ``.npz`` bytes.

    Only the filled rows are written, so a young buffer of a large capacity stays small.
    """
    _check_supported(buffer)
    rows = filled(buffer)
    arrays = {name: getattr(buffer, name)[:rows] for name in _ARRAYS}
    out = io.BytesIO()
    np.savez_compressed(
        out,
        format_version=np.int64(REPLAY_FORMAT_VERSION),
        buffer_size=np.int64(buffer.buffer_size),
        pos=np.int64(buffer.pos),
        full=np.bool_(buffer.full),
        **arrays,
    )
    return out.getvalue()


def restore_replay_buffer(buffer: ReplayBuffer, data: bytes) -> None:
    """Fill ``buffer`` (freshly built, same spaces and capacity) from :func:`replay_buffer_to_bytes`.

    Raises ValueError, naming the problem, when the bytes don't fit the buffer; the buffer is only
    written once everything has been checked.
    """
    _check_supported(buffer)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            # Reading an object array (which would need pickle) raises ValueError here.
            stored = {name: archive[name] for name in archive.files if name in {*_SCALARS, *_ARRAYS}}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"replay buffer npz: unreadable ({error})") from None
    missing = sorted({*_SCALARS, *_ARRAYS} - set(stored))
    if missing:
        raise ValueError(f"replay buffer npz: missing array(s) {missing}")
    version, capacity, pos, full = (_scalar(stored[name], name) for name in _SCALARS)
    arrays = {name: stored[name] for name in _ARRAYS}
    if version != REPLAY_FORMAT_VERSION:
        raise ValueError(f"replay buffer npz: unsupported format_version {version}")
    if capacity != buffer.buffer_size:
        raise ValueError(
            f"replay buffer npz holds a buffer of capacity {capacity}, but the model's has "
            f"{buffer.buffer_size} (was config.buffer_size changed?)"
        )
    if not 0 <= pos < capacity:
        raise ValueError(f"replay buffer npz: pos {pos} is outside [0, {capacity})")
    rows = capacity if full else pos
    for name, array in arrays.items():
        target = getattr(buffer, name)
        expected = (rows, *target.shape[1:])
        if array.shape != expected:
            raise ValueError(
                f"replay buffer npz: {name!r} has shape {array.shape}, but the model's buffer needs {expected} "
                "(different environment or spaces?)"
            )
        if array.dtype.kind not in "fiub":
            raise ValueError(f"replay buffer npz: {name!r} must be numeric, got dtype {array.dtype}")
    for name, array in arrays.items():
        getattr(buffer, name)[:rows] = array
    buffer.pos, buffer.full = pos, bool(full)


def _scalar(array: np.ndarray, name: str) -> int:
    if array.shape != () or array.dtype.kind not in "iub":
        raise ValueError(f"replay buffer npz: {name!r} must be an integer or bool scalar")
    return int(array)


def relabel(
    buffer: ReplayBuffer,
    reward_fn: RewardFn,
    *,
    unscale_action: Callable[[np.ndarray], np.ndarray] | None,
    chunk_size: int = RELABEL_CHUNK,
) -> int:
    """Recompute the rewards of all stored transitions as ``reward_fn([obs, action])``.

    ``unscale_action`` maps stored actions back to what the environment saw: pass
    ``model.policy.unscale_action`` for SAC's scaled Box actions, None when actions are stored
    as taken. Returns the number of transitions relabelled.
    """
    _check_supported(buffer)
    rows = filled(buffer)
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        observations = buffer.observations[start:stop, 0].reshape(stop - start, -1)
        actions = buffer.actions[start:stop, 0]
        if unscale_action is not None:
            actions = unscale_action(actions)
        features = np.concatenate((observations, actions.reshape(stop - start, -1)), axis=1, dtype=np.float32)
        rewards = np.asarray(reward_fn(features), dtype=np.float32).reshape(-1)
        if rewards.shape != (stop - start,):
            raise ValueError(f"reward_fn returned {rewards.shape[0]} rewards for {stop - start} transitions")
        buffer.rewards[start:stop, 0] = rewards
    return rows
