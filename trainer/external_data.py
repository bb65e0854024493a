"""External data in: rollouts uploaded from a researcher's own simulator, and Minari datasets (the Django side).

An upload is checked whole before anything is stored (``trainer.core.external.parse_upload``: shapes, dtypes,
finite values, factor keys, sizes; never unpickled), then stored as a rollout and processed by a run of kind
``upload``; a Minari import is a run of kind ``import_dataset``. Both runs have one step, ``ingesting``
(``ingest``): cut the episodes into clips of ``project.segment_steps``, ask random queries among the clips that
have video, and make that video — cut from the uploaded frames or MP4, or re-simulated for a Minari episode
that stored its reset seed in an environment the project uses. Episodes with nothing to make video from become
data-only clips (``RenderStatus.NO_VIDEO``): never in a random query, but ranked by HERON like any other, and
compared factors-only (by their factor totals) in pairs a program asks for.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from accounts.models import User
from labeling import uploads
from labeling.clips import ClipSegment, clips_create, rollout_store, rollouts_delete
from labeling.errors import ValidationFailed
from labeling.models import Clip, Project, RenderStatus, Rollout
from labeling.services import queries_create_random

from . import loop
from .clip_pipeline import clips_needing_video, render_clip
from .core import envs, external, rollouts
from .models import Run, RunKind

logger = logging.getLogger(__name__)

MAX_QUERIES = 100_000


def limits() -> external.Limits:
    return external.Limits(
        max_steps=settings.UPLOAD_MAX_STEPS,
        max_frame_side=settings.UPLOAD_MAX_FRAME_SIDE,
        max_array_bytes=settings.UPLOAD_MAX_ARRAY_BYTES,
    )


def _factor_keys(project: Project) -> list[str]:
    return list(project.factors.order_by("position", "id").values_list("key", flat=True))


@functools.lru_cache(maxsize=64)
def _env_spaces(env_id: str, kwargs_json: str) -> external.Spaces:
    import json

    env = envs.make_env(env_id, **json.loads(kwargs_json))
    try:
        return external.Spaces.from_gymnasium(env.observation_space, env.action_space)
    finally:
        env.close()


def project_spaces(project: Project) -> external.Spaces:
    """The observation and action spaces episodes must have: the project's own (``observation_space``,
    ``action_space``), else its simulator's; an external project with neither is checked for consistency only."""
    if project.observation_space or project.action_space:
        try:
            return external.Spaces.from_json(project.observation_space or {}, project.action_space or {})
        except (KeyError, TypeError, ValueError):
            raise ValidationFailed("the project's observation_space or action_space is malformed") from None
    if project.env_id in envs.PRESETS:
        import json

        return _env_spaces(project.env_id, json.dumps(project.env_kwargs or {}, sort_keys=True))
    return external.Spaces()


def _refused(error: external.ExternalDataError) -> ValidationFailed:
    return ValidationFailed(str(error), fields={error.field: [str(error)]})


def _check_size(file: UploadedFile, field: str) -> None:
    limit = settings.MAX_UPLOAD_BYTES
    if file.size is None or file.size > limit:
        raise ValidationFailed(f"{field}: the file is larger than {limit} bytes", fields={field: [f"at most {limit}"]})


def _mp4_checked(video: UploadedFile) -> tuple[bytes, int, int]:
    """The MP4's bytes, frame count and frame rate, after the content checks every uploaded video gets."""
    _check_size(video, "video")
    try:
        uploads.check_video(video)
    except ValidationError as error:
        message = " ".join(error.messages)
        raise ValidationFailed(f"video: {message}", fields={"video": [message]}) from None
    video.seek(0)
    data = video.read()
    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as handle:
        handle.write(data)
        path = handle.name
    try:
        n_frames, width, height, fps = external.mp4_info(path)
    except Exception:
        raise ValidationFailed("video: the MP4 cannot be decoded", fields={"video": ["cannot be decoded"]}) from None
    finally:
        os.unlink(path)
    try:
        external.check_frame_size(width, height, limits(), field="video")
    except external.ExternalDataError as error:
        raise _refused(error) from None
    return data, n_frames, max(1, round(fps)) if fps > 0 else 0


def rollout_upload(
    *,
    project: Project,
    file: UploadedFile,
    video: UploadedFile | None,
    created_by: User | None,
    queries: int | None = None,
    fps: int | None = None,
    render_all: bool = False,
) -> Run:
    """Check an uploaded episode, store it as a rollout and queue the ``upload`` run that makes its clips.

    ``render_all``: make every clip's video, not only the queried clips' (a program will ask its own pairs of
    these clips right after, e.g. imitation's preference gatherer). Raises ValidationFailed (nothing stored) for
    anything wrong with it.
    """
    _check_size(file, "file")
    mp4, mp4_frames, mp4_fps = (None, None, 0) if video is None else _mp4_checked(video)
    keys = _factor_keys(project)
    try:
        file.seek(0)
        episode = external.parse_upload(
            file, factor_keys=keys, spaces=project_spaces(project), limits=limits(), mp4_frames=mp4_frames
        )
    except external.ExternalDataError as error:
        raise _refused(error) from None
    kind = "frames" if episode.frames is not None else "mp4" if mp4 is not None else "none"
    if episode.n_steps < project.segment_steps:
        message = f"the episode has {episode.n_steps} steps, fewer than one clip ({project.segment_steps})"
        raise ValidationFailed(message, fields={"actions": [message]})
    name = os.path.basename(file.name or "upload.npz")[:100]
    params = {"filename": name, "steps": episode.n_steps, "video": kind, "queries": queries, "render_all": render_all}
    data = external.save_external_npz(
        episode,
        env_id=project.env_id,
        env_kwargs=project.env_kwargs or {},
        policy="upload",
        source="upload",
        video=kind,
        fps=fps or mp4_fps or None,
        mp4=mp4,
    )
    with transaction.atomic():
        run = loop.run_start(project=project, kind=RunKind.UPLOAD, params=params, created_by=created_by)
        rollout_store(
            project=project,
            policy="upload",
            env_seed=0,
            n_steps=episode.n_steps,
            data=data,
            true_return=None if episode.rewards is None else float(episode.rewards.sum()),
            run=run.pk,
        )
    run.refresh_from_db()
    return run


# --- Minari --------------------------------------------------------------------------------------------------


def minari_dataset_path(name: str, *, inside_root: bool = True) -> Path:
    """The ``data`` folder of a local Minari dataset: ``name`` is a dataset id (``pendulum/random-v0``) or a
    path under ``MINARI_DATASETS_PATH``; with ``inside_root=False`` (the management command) any local path."""
    root = Path(settings.MINARI_DATASETS_PATH).resolve()
    text = str(name or "").strip()
    if not text or len(text) > 300 or "\x00" in text:
        raise ValidationFailed("name a Minari dataset", fields={"dataset": ["a dataset id or path"]})
    candidate = Path(text)
    if inside_root:
        if candidate.is_absolute():
            candidate = candidate.resolve()
        else:
            candidate = (root / candidate).resolve()
        if candidate != root and root not in candidate.parents:
            raise ValidationFailed(
                "the dataset must be inside the Minari datasets folder (MINARI_DATASETS_PATH)",
                fields={"dataset": ["outside the Minari datasets folder"]},
            )
    else:
        candidate = candidate if candidate.is_absolute() else (root / candidate)
        if not candidate.exists() and Path(text).exists():
            candidate = Path(text)
        candidate = candidate.resolve()
    data = candidate if candidate.name == "data" else candidate / "data"
    if not data.is_dir():
        raise ValidationFailed(
            f"no local Minari dataset {text[:100]!r} (nothing is downloaded)", fields={"dataset": ["not found"]}
        )
    return data


def _open_dataset(path: Path) -> Any:
    import minari

    try:
        return minari.MinariDataset(path)
    except Exception as error:
        raise ValidationFailed(
            f"the Minari dataset cannot be read: {str(error)[:200]}", fields={"dataset": ["unreadable"]}
        ) from None


def _dataset_env(dataset: Any) -> tuple[str | None, dict[str, Any]]:
    spec = dataset.env_spec
    if spec is None:
        return None, {}
    return spec.id, dict(spec.kwargs or {})


def _video_by_resimulation(project: Project, dataset: Any) -> bool:
    """Clips of this dataset can be re-simulated: it names the project's environment (same arguments)."""
    env_id, kwargs = _dataset_env(dataset)
    if env_id is None or env_id != project.env_id or env_id not in envs.PRESETS:
        return False
    return all(kwargs.get(key) == value for key, value in (project.env_kwargs or {}).items())


def minari_check(project: Project, dataset: Any) -> None:
    """Refuse a dataset whose spaces don't match the project's."""
    wanted = project_spaces(project)
    got = external.Spaces.from_gymnasium(dataset.observation_space, dataset.action_space)
    if got.observation_shape is None or got.action_kind is None:
        raise ValidationFailed(
            "only datasets with Box observations and Box or Discrete actions can be imported",
            fields={"dataset": ["unsupported spaces"]},
        )
    if wanted.observation_shape is not None and wanted.observation_shape != got.observation_shape:
        message = f"observations are {got.observation_shape}; the project's are {wanted.observation_shape}"
        raise ValidationFailed(message, fields={"dataset": [message]})
    if wanted.action_kind is not None and (wanted.action_kind, wanted.action_shape, wanted.action_n) != (
        got.action_kind,
        got.action_shape,
        got.action_n,
    ):
        message = "the dataset's actions do not match the project's action space"
        raise ValidationFailed(message, fields={"dataset": [message]})
    for factor in project.factors.all():
        try:
            envs.compiled_source(factor.source)
        except ValueError as error:
            raise ValidationFailed(f"factor {factor.key}: {error}", fields={"dataset": [str(error)]}) from None


def minari_import_start(
    *,
    project: Project,
    dataset: str,
    created_by: User | None,
    max_episodes: int | None = None,
    queries: int | None = None,
    inside_root: bool = True,
) -> Run:
    """Check a local Minari dataset against the project and queue an ``import_dataset`` run."""
    path = minari_dataset_path(dataset, inside_root=inside_root)
    minari_check(project, _open_dataset(path))
    cap = settings.MINARI_MAX_EPISODES
    if max_episodes is not None and not 1 <= max_episodes <= cap:
        raise ValidationFailed(f"max_episodes is 1 to {cap}", fields={"max_episodes": [f"1 to {cap}"]})
    params = {"dataset": str(path), "max_episodes": max_episodes or cap, "queries": queries}
    return loop.run_start(project=project, kind=RunKind.IMPORT_DATASET, params=params, created_by=created_by)


def _episode_seed(dataset: Any, index: int) -> int | None:
    try:
        (metadata,) = list(dataset.storage.get_episode_metadata([index]))
    except Exception:
        return None
    seed = metadata.get("seed")
    return None if seed is None else int(seed)


# --- the step ------------------------------------------------------------------------------------------------


def _segments(
    n_steps: int, segment_steps: int, factors: np.ndarray, keys: list[str], rewards: np.ndarray | None
) -> list[ClipSegment]:
    return [
        ClipSegment(
            start=seg.start,
            length=seg.length,
            factor_totals=dict(zip(keys, rollouts.segment_totals(factors, seg).tolist(), strict=True)),
            true_return=None if rewards is None else float(rewards[seg.start : seg.stop].sum()),
        )
        for seg in rollouts.segments(n_steps, segment_steps)
    ]


def _clips_of_upload(run: Run, keys: list[str]) -> tuple[list[Clip], int, bool]:
    """Clips of the run's uploaded rollouts, cut once (a step run again keeps what an earlier attempt made, and
    says so: its queries were asked then)."""
    project = run.project
    made: list[Clip] = []
    n_rollouts = 0
    fresh = True
    for rollout in Rollout.objects.filter(project=project, run=run.pk).order_by("id"):
        n_rollouts += 1
        existing = list(Clip.objects.filter(rollout=rollout).order_by("id"))
        if existing:
            made.extend(existing)
            fresh = False
            continue
        with rollout.data.open("rb") as handle:
            raw = handle.read()
        data = rollouts.load_npz(raw)
        stored = external.stored_video(raw)
        has_video = stored is not None and stored.kind != "none"
        has_rewards = bool(rollout.true_return is not None)
        segments = _segments(
            data.n_steps, project.segment_steps, data.factors, keys, data.rewards if has_rewards else None
        )
        made.extend(clips_create(rollout=rollout, segments=segments, video=has_video))
    return made, n_rollouts, fresh


def _import_episodes(run: Run, keys: list[str], report: Callable[[float, str], None]) -> tuple[list[Clip], int]:
    project = run.project
    rollouts_delete(project=project, run=run.pk)  # a step run again starts over
    dataset = _open_dataset(Path(str(run.params["dataset"])))
    minari_check(project, dataset)
    sources = list(project.factors.order_by("position", "id").values_list("source", flat=True))
    resimulate = _video_by_resimulation(project, dataset)
    dataset_id = str(dataset.spec.dataset_id)[:80]
    total = min(int(run.params.get("max_episodes") or 1), dataset.total_episodes)
    made: list[Clip] = []
    for index in range(total):
        episode = dataset[index]
        observations = np.asarray(episode.observations, dtype=np.float64).reshape(len(episode.observations), -1)
        actions = np.asarray(episode.actions)
        actions_2d = actions.reshape(len(actions), -1)
        rewards = np.asarray(episode.rewards, dtype=np.float64)
        if len(actions) < project.segment_steps:
            continue  # shorter than a clip
        try:
            factors = external.episode_factors(sources, observations, actions, rewards, episode.infos)
        except ValueError as error:
            raise ValueError(f"episode {index}: {error}") from None
        seed = _episode_seed(dataset, int(episode.id)) if resimulate else None
        video = "resimulate" if seed is not None else "none"
        data = external.save_external_npz(
            external.ExternalEpisode(
                observations=observations,
                actions=actions_2d if actions.dtype.kind == "f" else actions_2d.astype(np.int64),
                factors=factors,
                rewards=rewards,
            ),
            env_id=project.env_id,
            env_kwargs=project.env_kwargs or {},
            policy=f"minari:{dataset_id}"[:100],
            source="minari",
            video=video,
            seed=seed or 0,
            episode_id=int(episode.id),
        )
        with transaction.atomic():
            rollout = rollout_store(
                project=project,
                policy=f"minari:{dataset_id}"[:100],
                env_seed=seed or 0,
                n_steps=len(actions),
                data=data,
                true_return=float(rewards.sum()),
                run=run.pk,
            )
            segments = _segments(len(actions), project.segment_steps, factors, keys, rewards)
            made.extend(clips_create(rollout=rollout, segments=segments, video=video != "none"))
        report(0.5 * (index + 1) / total, f"Imported {index + 1} of {total} episodes")
    return made, total


def ingest(run: Run, loop_settings: Any, report: Callable[[float, str], None]) -> dict[str, Any]:
    """The ``ingesting`` step of an upload or a dataset import: clips, random queries, video."""
    project = run.project
    keys = _factor_keys(project)
    fresh = True  # an import starts over (its old clips and their queries are deleted first)
    if run.kind == RunKind.IMPORT_DATASET:
        clips, episodes = _import_episodes(run, keys, report)
    else:
        clips, episodes, fresh = _clips_of_upload(run, keys)
    with_video = [clip for clip in clips if clip.render_status != RenderStatus.NO_VIDEO]
    wanted = run.params.get("queries")
    count = len(with_video) if wanted is None else int(wanted)
    created = 0
    if fresh and project.has_pairwise and with_video and count > 0:
        # Pairs among the new clips and the project's other clips with video.
        pool = Clip.objects.filter(project=project).exclude(render_status=RenderStatus.NO_VIDEO)
        created = queries_create_random(
            project=project, count=count, rng=np.random.default_rng(run.pk), clips=list(pool)
        )
    if run.params.get("render_all"):
        to_render = [clip for clip in with_video if clip.render_status != RenderStatus.READY]
    else:
        to_render = [clip for clip in clips_needing_video(project) if clip.pk in {c.pk for c in with_video}]
    failed = 0
    for index, clip in enumerate(to_render):
        if not render_clip(Clip.objects.select_related("project", "rollout").get(pk=clip.pk)):
            failed += 1
        report(0.5 + 0.5 * (index + 1) / len(to_render), f"Rendered {index + 1} of {len(to_render)} clips")
    return {
        "episodes": episodes,
        "clips": len(clips),
        "clips_with_video": len(with_video),
        "queries": created,
        "rendered": len(to_render) - failed,
        "render_failed": failed,
    }


# --- parameters, checked when the run is queued ----------------------------------------------------------------


def _queries(raw: dict[str, Any]) -> int | None:
    value = raw.get("queries")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUERIES:
        raise ValueError(f"queries must be 0 to {MAX_QUERIES}")
    return value


def upload_params(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = set(raw) - {"filename", "steps", "video", "queries", "render_all"}
    if unknown:
        raise ValueError(f"unknown upload parameters: {sorted(unknown)}")
    if raw.get("video") not in external.VIDEO_KINDS:
        raise ValueError("video must be frames, mp4 or none")
    return {
        "filename": str(raw.get("filename", ""))[:100],
        "steps": int(raw.get("steps") or 0),
        "video": raw["video"],
        "queries": _queries(raw),
        "render_all": raw.get("render_all") is True,
    }


def import_params(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = set(raw) - {"dataset", "max_episodes", "queries"}
    if unknown:
        raise ValueError(f"unknown import parameters: {sorted(unknown)}")
    dataset = raw.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise ValueError("dataset must be the path of a local Minari dataset")
    episodes = raw.get("max_episodes")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError("max_episodes must be a positive whole number")
    return {"dataset": dataset, "max_episodes": episodes, "queries": _queries(raw)}
