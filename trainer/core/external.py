"""Episodes that come from outside: uploaded ``.npz`` rollouts and Minari datasets (Django-free).

An uploaded episode is checked here, array by array, before anything is stored (``parse_upload``); every problem
raises :class:`ExternalDataError` naming the array at fault. Archives are opened with ``allow_pickle=False`` only,
and each member's header is read first, so an object array (a pickle) or an array that would decompress to more
than ``limits.max_array_bytes`` is refused before it is loaded.

The upload format (README "Rollouts from your own simulator")::

    observations  (T+1, *obs_shape)  numeric   row 0 is the observation before the first action
    actions       (T, *act_shape)    numeric   box actions; discrete: (T,) or (T, 1) integers in [0, n)
    factor_<key>  (T,)               numeric   one per project factor, exactly the project's keys
    rewards       (T,)               numeric   optional: the true reward (for evaluation only)
    frames        (T or T+1, H, W, 3) uint8    optional RGB frames (or an MP4 beside the archive)

Stored, an external episode is the usual rollout ``.npz`` (``trainer.core.rollouts.save_npz``: observations
flattened to (T+1, O), actions (T, A), factors (T, K) in the project's factor order, rewards) plus metadata
``source`` ("upload" or "minari"), ``video`` ("frames", "mp4", "resimulate" or "none"), ``fps`` and
``has_rewards``, and the video itself as the array ``frames`` or the MP4's bytes as the uint8 array ``video_mp4``.
Uploaded episodes have no seed to re-simulate from: their clips' video is cut from what was uploaded, or there is
none (factors only).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.core.envs import compiled_source
from trainer.core.factor_sources import Step
from trainer.core.rollouts import NPZ_FORMAT_VERSION

FACTOR_PREFIX = "factor_"
KNOWN_ARRAYS = ("observations", "actions", "rewards", "frames")
MAX_MEMBERS = 256
VIDEO_KINDS = ("frames", "mp4", "resimulate", "none")


class ExternalDataError(ValueError):
    """An upload or dataset episode that cannot be used; ``field`` names the array (or file) at fault."""

    def __init__(self, message: str, *, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    max_steps: int = 10_000
    max_frame_side: int = 1024
    max_array_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class Spaces:
    """What a project's episodes look like; ``None`` leaves that part unchecked (beyond consistency)."""

    observation_shape: tuple[int, ...] | None = None
    action_kind: str | None = None  # "box" or "discrete"
    action_shape: tuple[int, ...] | None = None
    action_n: int | None = None

    @classmethod
    def from_json(cls, observation_space: Mapping[str, Any], action_space: Mapping[str, Any]) -> Spaces:
        """From a project's ``observation_space`` / ``action_space`` fields (empty: unchecked)."""
        obs_shape = observation_space.get("shape") if observation_space else None
        kind = action_space.get("kind") if action_space else None
        return cls(
            observation_shape=None if obs_shape is None else tuple(int(n) for n in obs_shape),
            action_kind=kind,
            action_shape=tuple(int(n) for n in action_space["shape"]) if kind == "box" else None,
            action_n=int(action_space["n"]) if kind == "discrete" else None,
        )

    @classmethod
    def from_gymnasium(cls, observation_space: Any, action_space: Any) -> Spaces:
        import gymnasium.spaces as gs

        obs_shape = tuple(observation_space.shape) if isinstance(observation_space, gs.Box) else None
        if isinstance(action_space, gs.Discrete):
            return cls(observation_shape=obs_shape, action_kind="discrete", action_n=int(action_space.n))
        if isinstance(action_space, gs.Box):
            return cls(observation_shape=obs_shape, action_kind="box", action_shape=tuple(action_space.shape))
        return cls(observation_shape=obs_shape)


@dataclass
class ExternalEpisode:
    observations: np.ndarray  # (T+1, O) float64
    actions: np.ndarray  # (T, A) float64, or (T, 1) int64 for discrete actions
    factors: np.ndarray  # (T, K) float64, in the project's factor order
    rewards: np.ndarray | None  # (T,) float64
    frames: np.ndarray | None = None  # (T or T+1, H, W, 3) uint8

    @property
    def n_steps(self) -> int:
        return len(self.actions)


# --- reading an uploaded archive ---------------------------------------------------------------------------


def _member_headers(raw: Any, limits: Limits) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's shape and dtype, read from its header without loading it."""
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ExternalDataError("the file is not an .npz archive (a zip of .npy arrays)") from None
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ExternalDataError(f"the archive has {len(members)} members; at most {MAX_MEMBERS}")
        for member in members:
            if not member.filename.endswith(".npy"):
                raise ExternalDataError(f"the archive member {member.filename[:80]!r} is not a .npy array")
            name = member.filename[: -len(".npy")]
            try:
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                    else:
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            except Exception:  # a malformed header, an unsupported version, a broken member
                raise ExternalDataError(f"the array {name[:80]!r} cannot be read", field=name[:80]) from None
            if dtype.hasobject:
                raise ExternalDataError(
                    f"the array {name!r} holds Python objects (pickled data is never loaded); use numeric arrays",
                    field=name,
                )
            total += math.prod(shape) * dtype.itemsize
            if total > limits.max_array_bytes:
                raise ExternalDataError(
                    f"the arrays are larger than {limits.max_array_bytes} bytes once decompressed", field=name
                )
            headers[name] = (tuple(shape), dtype)
    return headers


def _numeric(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ExternalDataError(f"{name} must be numeric, not {array.dtype}", field=name)
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ExternalDataError(f"{name} is not finite at index {bad}", field=name)
    return values


def parse_upload(
    raw: Any,
    *,
    factor_keys: Sequence[str],
    spaces: Spaces,
    limits: Limits,
    mp4_frames: int | None = None,
) -> ExternalEpisode:
    """Check an uploaded ``.npz`` episode (a seekable binary file) against the project and the limits.

    Raises ExternalDataError, naming the array at fault, for anything wrong.

    ``mp4_frames``: the frame count of an MP4 uploaded with it (it must cover T or T+1 steps).
    """
    headers = _member_headers(raw, limits)
    expected_factors = {f"{FACTOR_PREFIX}{key}" for key in factor_keys}
    unknown = sorted(set(headers) - set(KNOWN_ARRAYS) - expected_factors)
    if unknown:
        extra = [name for name in unknown if name.startswith(FACTOR_PREFIX)]
        if extra:
            raise ExternalDataError(
                f"factors {[n[len(FACTOR_PREFIX) :] for n in extra]} are not the project's "
                f"(its factors: {list(factor_keys)})",
                field=extra[0],
            )
        raise ExternalDataError(
            f"unknown arrays {unknown[:10]}: expected observations, actions, factor_<key>, rewards, frames",
            field=unknown[0],
        )
    missing = [name for name in ("observations", "actions", *sorted(expected_factors)) if name not in headers]
    if missing:
        raise ExternalDataError(f"missing arrays {missing}", field=missing[0])
    act_shape, _ = headers["actions"]
    if len(act_shape) < 1:
        raise ExternalDataError("actions must have one row per step", field="actions")
    n_steps = act_shape[0]
    if not 1 <= n_steps <= limits.max_steps:
        raise ExternalDataError(f"an episode has 1 to {limits.max_steps} steps, this one {n_steps}", field="actions")
    if "frames" in headers and mp4_frames is not None:
        raise ExternalDataError("send frames or an MP4, not both", field="frames")

    raw.seek(0)
    try:
        with np.load(raw, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in headers}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ExternalDataError(f"the archive cannot be read ({str(error)[:200]})") from None

    observations = _numeric("observations", arrays["observations"])
    if observations.ndim < 2 or len(observations) != n_steps + 1:
        raise ExternalDataError(
            f"observations must be (T+1, …) = ({n_steps + 1}, …) for {n_steps} actions; got {observations.shape}",
            field="observations",
        )
    if spaces.observation_shape is not None and observations.shape[1:] != spaces.observation_shape:
        raise ExternalDataError(
            f"observations must be (T+1, {', '.join(map(str, spaces.observation_shape))}); got {observations.shape}",
            field="observations",
        )
    observations = observations.reshape(n_steps + 1, -1)

    actions_raw = arrays["actions"]
    if spaces.action_kind == "discrete":
        if actions_raw.dtype.kind not in "iu":
            raise ExternalDataError(f"discrete actions must be integers, not {actions_raw.dtype}", field="actions")
        if actions_raw.shape not in ((n_steps,), (n_steps, 1)):
            raise ExternalDataError(
                f"discrete actions must be (T,) or (T, 1); got {actions_raw.shape}", field="actions"
            )
        discrete = actions_raw.reshape(n_steps, 1).astype(np.int64)
        n = int(spaces.action_n or 0)
        if discrete.min() < 0 or discrete.max() >= n:
            raise ExternalDataError(f"discrete actions must be in [0, {n})", field="actions")
        actions = discrete
    else:
        values = _numeric("actions", actions_raw)
        if spaces.action_shape is not None and values.shape[1:] != spaces.action_shape:
            raise ExternalDataError(
                f"actions must be (T, {', '.join(map(str, spaces.action_shape))}); got {values.shape}",
                field="actions",
            )
        actions = values.reshape(n_steps, -1)

    columns = []
    for key in factor_keys:
        name = f"{FACTOR_PREFIX}{key}"
        column = _numeric(name, arrays[name])
        if column.shape != (n_steps,):
            raise ExternalDataError(f"{name} must be ({n_steps},), one value per step; got {column.shape}", field=name)
        columns.append(column)
    factors = np.stack(columns, axis=1) if columns else np.zeros((n_steps, 0))

    rewards = None
    if "rewards" in arrays:
        rewards = _numeric("rewards", arrays["rewards"])
        if rewards.shape != (n_steps,):
            raise ExternalDataError(f"rewards must be ({n_steps},); got {rewards.shape}", field="rewards")

    frames = None
    if "frames" in arrays:
        frames = arrays["frames"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ExternalDataError(
                f"frames must be RGB uint8 (N, H, W, 3); got {frames.shape} {frames.dtype}", field="frames"
            )
        check_frame_count(len(frames), n_steps, field="frames")
        check_frame_size(frames.shape[2], frames.shape[1], limits, field="frames")
    if mp4_frames is not None:
        check_frame_count(mp4_frames, n_steps, field="video")
    return ExternalEpisode(observations=observations, actions=actions, factors=factors, rewards=rewards, frames=frames)


def check_frame_count(count: int, n_steps: int, *, field: str) -> None:
    if count not in (n_steps, n_steps + 1):
        raise ExternalDataError(
            f"{field}: {count} frames for {n_steps} steps; need T or T+1 = {n_steps} or {n_steps + 1}", field=field
        )


def check_frame_size(width: int, height: int, limits: Limits, *, field: str) -> None:
    if not (2 <= width <= limits.max_frame_side and 2 <= height <= limits.max_frame_side):
        raise ExternalDataError(
            f"{field}: frames of {width}x{height}; each side 2 to {limits.max_frame_side} pixels", field=field
        )


# --- Minari episodes ---------------------------------------------------------------------------------------


def _info_at(infos: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Minari stores infos as arrays over the episode (reset info first): the dict of step ``index``."""
    out: dict[str, Any] = {}
    for key, values in infos.items():
        if isinstance(values, Mapping):
            continue  # nested dicts: factor sources read flat keys only
        array = np.asarray(values)
        if array.ndim >= 1 and index < len(array):
            out[key] = array[index]
    return out


def episode_factors(
    sources: Sequence[str],
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    infos: Mapping[str, Any] | None,
) -> np.ndarray:
    """Per-step factor values (T, K) from a recorded episode, with the project's factor sources.

    Info arrays of T+1 rows (Minari's: the reset info first) give step t the info returned by step t.
    """
    compiled = [compiled_source(source) for source in sources]
    n_steps = len(actions)
    infos = infos or {}
    shift = 1 if any(len(np.asarray(v)) == n_steps + 1 for v in infos.values() if not isinstance(v, Mapping)) else 0
    values = np.empty((n_steps, len(compiled)), dtype=np.float64)
    for t in range(n_steps):
        step = Step(
            obs=observations[t],
            action=np.asarray(actions[t]),
            next_obs=observations[t + 1],
            reward=float(rewards[t]),
            info=_info_at(infos, t + shift),
        )
        for k, source in enumerate(compiled):
            values[t, k] = source(step)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ExternalDataError(f"factor values are not finite at [step, factor] {bad}", field="factors")
    return values


# --- the stored format -------------------------------------------------------------------------------------


def save_external_npz(
    episode: ExternalEpisode,
    *,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    policy: str,
    source: str,
    video: str,
    seed: int = 0,
    fps: int | None = None,
    mp4: bytes | None = None,
    episode_id: int | None = None,
) -> bytes:
    """The rollout ``.npz`` (readable by ``trainer.core.rollouts.load_npz``) plus the episode's own video.

    ``episode_id`` is the episode's id in its source dataset (a Minari import), kept so exports can key clips to it.
    """
    if video not in VIDEO_KINDS:
        raise ValueError(f"video must be one of {VIDEO_KINDS}")
    metadata = {
        "format_version": NPZ_FORMAT_VERSION,
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs),
        "seed": int(seed),
        "policy": policy,
        "terminated": False,
        "truncated": False,
        "source": source,
        "video": video,
        "fps": fps,
        "has_rewards": episode.rewards is not None,
        "episode": episode_id,
    }
    arrays: dict[str, np.ndarray] = {
        "metadata": np.array([json.dumps(metadata, sort_keys=True)]),
        "actions": episode.actions,
        "observations": episode.observations,
        "factors": episode.factors,
        "rewards": episode.rewards if episode.rewards is not None else np.zeros(episode.n_steps),
    }
    if video == "frames":
        assert episode.frames is not None
        arrays["frames"] = episode.frames
    if video == "mp4":
        assert mp4 is not None
        arrays["video_mp4"] = np.frombuffer(mp4, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def stored_source(handle: Any) -> tuple[str | None, int | None]:
    """An external rollout's source (``upload``, ``minari``; None for a simulator's rollout) and its episode id
    in the source dataset (None where none was recorded), from the archive's metadata alone (no arrays read)."""
    with np.load(handle, allow_pickle=False) as archive:
        metadata = json.loads(str(archive["metadata"][0]))
    episode = metadata.get("episode")
    return metadata.get("source"), None if episode is None else int(episode)


@dataclass(frozen=True)
class StoredVideo:
    kind: str  # "frames", "mp4", "resimulate" or "none"
    fps: int | None
    n_steps: int
    frames: np.ndarray | None = None
    mp4: bytes | None = None


def stored_video(raw: bytes) -> StoredVideo | None:
    """An external rollout's video source, or None for a simulator's rollout (render it by re-simulation)."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        metadata = json.loads(str(archive["metadata"][0]))
        source = metadata.get("source")
        if source is None:
            return None
        kind = metadata.get("video", "none")
        n_steps = len(archive["actions"])
        fps = metadata.get("fps")
        return StoredVideo(
            kind=kind,
            fps=int(fps) if fps else None,
            n_steps=n_steps,
            frames=archive["frames"] if kind == "frames" else None,
            mp4=archive["video_mp4"].tobytes() if kind == "mp4" else None,
        )


def segment_frames(video: StoredVideo, start: int, length: int) -> np.ndarray:
    """The frames of steps ``start .. start+length`` from an episode's stored frames or MP4.

    With T+1 frames (one per observation) a clip gets ``length + 1`` frames like a re-simulated one; with T
    frames (one per step) it gets ``length``.
    """
    if video.kind == "frames":
        assert video.frames is not None
        frames = video.frames
    elif video.kind == "mp4":
        assert video.mp4 is not None
        frames = decode_mp4(video.mp4)
    else:
        raise ValueError(f"this episode has no video to cut clips from ({video.kind})")
    stop = start + length + (1 if len(frames) > video.n_steps else 0)
    if stop > len(frames):
        raise ValueError(f"the video has {len(frames)} frames; the clip needs {stop}")
    return np.ascontiguousarray(frames[start:stop])


def decode_mp4(data: bytes) -> np.ndarray:
    """All frames of an MP4, (N, H, W, 3) uint8 (ffmpeg from imageio-ffmpeg)."""
    import os
    import tempfile

    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as handle:
        handle.write(data)
        path = handle.name
    try:
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]
    finally:
        os.unlink(path)
    if not frames:
        raise ValueError("the video has no frames")
    return np.stack(frames)


def mp4_info(path: str) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of an MP4 on disk, counting frames by decoding."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path)
    try:
        meta = next(reader)
    finally:
        reader.close()
    n_frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    width, height = meta["size"]
    return int(n_frames), int(width), int(height), float(meta.get("fps") or 0.0)
