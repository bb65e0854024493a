"""Rollouts → clips → videos → queries, for a project (the Django side of the clip pipeline).

The numerical work lives in envs/policies/rollouts/video (no Django); this module hands what they make to
labeling's services (``labeling.clips``, ``labeling.services.queries_create_random``), which write the rows.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files import File
from django.db import DatabaseError, transaction

from labeling.clips import (
    ClipSegment,
    clip_render_claim,
    clip_render_fail,
    clip_render_finish,
    clips_create,
    rollout_store,
    rollouts_delete,
)
from labeling.models import Clip, Project, Query, RenderStatus
from labeling.services import queries_create_random

from .core import envs, external, rollouts, video
from .core.scripted import make_policy
from .project_task import make_project_env, project_task

logger = logging.getLogger(__name__)
DEFAULT_EXTERNAL_FPS = 30  # uploaded frames without a frame rate (the project's render_fps wins when set)


@dataclass(frozen=True)
class GenerateClipsParams:
    """What a generate_clips run does. Stored as the run's params (JSON)."""

    rollouts: int = 8
    """Number of episodes to roll out."""
    steps: int | None = None
    """Steps per episode; default: the preset's episode length."""
    policies: Sequence[str] = field(default_factory=tuple)
    """Policy specs used in turn ("random", "pendulum_swingup:0.3", …); default: the project's initial policies,
    else random + the preset's scripted ones."""
    queries: int = 50
    """Random pairwise queries to create among the new clips."""
    seed: int = 0
    """Seeds the environment seeds, the policies' noise and the query pairs."""
    render: str = "queried"
    """Which new clips get video now: "queried" (only those a human will see), "all" or "none"."""
    iteration: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GenerateClipsParams:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown generate_clips parameters: {sorted(unknown)}")
        params = cls(**raw)
        if params.render not in ("queried", "all", "none"):
            raise ValueError("render must be queried, all or none")
        return params


def factor_columns(project: Project, preset: envs.EnvPreset) -> list[int]:
    """For each project factor, the column of the task's per-step factor array that feeds it (with the project's
    task, ``project_task``, its own column)."""
    by_source = {spec.source: i for i, spec in enumerate(preset.factors)}
    by_key = {spec.key: i for i, spec in enumerate(preset.factors)}
    columns = []
    for factor in project.factors.order_by("position", "id"):
        column = by_source.get(factor.source, by_key.get(factor.key))
        if column is None:
            raise ValueError(f"factor {factor.key!r}: no per-step extractor {factor.source!r} for {preset.env_id}")
        columns.append(column)
    return columns


def generate_clips(run: Any, report: Callable[[float, str], None]) -> dict[str, Any]:
    """A generate_clips run's step: seeded rollouts, clips with factor totals, random queries, then video for the
    clips shown. ``run`` is a trainer Run (its project, id and params)."""
    project = run.project
    params = GenerateClipsParams.from_dict(run.params)
    task = project_task(project)
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    columns = factor_columns(project, task)
    rng = np.random.default_rng(params.seed)
    policy_specs = list(params.policies) or list(project.initial_policies) or ["random", *task.scripted_policies]
    steps = params.steps or task.episode_steps
    probe_env = make_project_env(project)
    action_space = probe_env.action_space
    probe_env.close()

    # A step re-run after its worker died starts over: whatever the dead attempt stored is removed first.
    rollouts_delete(project=project, run=run.pk)

    new_clips: list[Clip] = []
    for index in range(params.rollouts):
        spec = policy_specs[index % len(policy_specs)]
        env_seed = int(rng.integers(0, 2**31 - 1))
        data = rollouts.run_rollout(
            project.env_id,
            policy=make_policy(spec, action_space),
            seed=env_seed,
            steps=steps,
            rng=rng,
            env_kwargs=project.env_kwargs,
            task=task,
        )
        new_clips.extend(
            store_rollout(
                project=project, run=run.pk, data=data, keys=keys, columns=columns, iteration=params.iteration
            )
        )
        report(0.5 * (index + 1) / params.rollouts, f"Rolled out {index + 1} of {params.rollouts} episodes")

    created = queries_create_random(
        project=project, count=params.queries, rng=rng, clips=new_clips, iteration=params.iteration
    )
    if params.render == "all":
        to_render = new_clips
    elif params.render == "queried":
        to_render = list(clips_needing_video(project))
    else:
        to_render = []
    for index, clip in enumerate(to_render):
        render_clip(clip)
        report(0.5 + 0.5 * (index + 1) / len(to_render), f"Rendered {index + 1} of {len(to_render)} clips")
    return {"rollouts": params.rollouts, "clips": len(new_clips), "queries": created, "rendered": len(to_render)}


def store_rollout(
    *,
    project: Project,
    run: int,
    data: rollouts.RolloutData,
    keys: list[str],
    columns: list[int],
    iteration: int,
) -> list[Clip]:
    segments = [
        ClipSegment(
            start=seg.start,
            length=seg.length,
            factor_totals=dict(zip(keys, rollouts.segment_totals(data.factors, seg)[columns].tolist(), strict=True)),
            true_return=float(data.rewards[seg.start : seg.start + seg.length].sum()),
        )
        for seg in rollouts.segments(data.n_steps, project.segment_steps)
    ]
    with transaction.atomic():
        rollout = rollout_store(
            project=project,
            policy=data.policy,
            env_seed=data.seed,
            n_steps=data.n_steps,
            data=rollouts.save_npz(data),
            true_return=data.true_return,
            iteration=iteration,
            run=run,
        )
        return clips_create(rollout=rollout, segments=segments)


def clips_needing_video(project: Project):
    """Clips that appear in an open query but have no video yet: the only ones worth rendering."""
    queried = Query.objects.filter(project=project, status="open")
    ids = set(queried.values_list("clip_a_id", flat=True)) | set(queried.values_list("clip_b_id", flat=True))
    return Clip.objects.filter(pk__in=ids).exclude(render_status=RenderStatus.READY).order_by("id")


def render_clip(clip: Clip) -> bool:
    """Render a clip's MP4 and poster from its rollout, if this caller wins the clip's render claim.

    True if this call rendered it. Safe to call twice and from concurrent workers: one claims the clip
    (``labeling.clips.clip_render_claim``), the others return False. A failure is stored on the clip; the
    files appear whole or not at all, and a failed clip leaves none behind (``clip_render_finish``).
    """
    if not clip_render_claim(clip_id=clip.pk):
        return False
    project = clip.project
    try:
        with clip.rollout.data.open("rb") as handle:
            raw = handle.read()
        # An uploaded or imported episode: its clips are cut from its own frames or MP4, never re-simulated
        # (there is no seed or simulator); "resimulate" marks an imported episode that has its reset seed.
        stored = external.stored_video(raw)
        if stored is not None and stored.kind != "resimulate":
            frames = external.segment_frames(stored, clip.start, clip.length)
            fps = stored.fps or project.render_fps or DEFAULT_EXTERNAL_FPS
        else:
            data = rollouts.load_npz(raw)
            frames = video.render_segment(
                project.env_id,
                seed=data.seed,
                actions=data.actions,
                start=clip.start,
                length=clip.length,
                width=project.render_width,
                height=project.render_height,
                env_kwargs=project.env_kwargs,
            )
            fps = project.render_fps or video.env_fps(project.env_id, project.env_kwargs)
        with tempfile.TemporaryDirectory() as folder:
            mp4, poster = Path(folder) / "clip.mp4", Path(folder) / "poster.jpg"
            video.write_mp4(frames, mp4, fps=fps)
            video.write_poster(frames[0], poster)
            with mp4.open("rb") as mp4_handle, poster.open("rb") as poster_handle:
                return clip_render_finish(clip=clip, video=File(mp4_handle), poster=File(poster_handle))
    except Exception as error:  # stored for the researcher; the job carries on with other clips
        logger.exception("rendering clip %s failed", clip.pk)
        if isinstance(error, DatabaseError):
            raise  # the row cannot be updated now; the claim goes stale and the clip is rendered again later
        clip_render_fail(clip_id=clip.pk, error=f"{type(error).__name__}: {error}")
        return False
