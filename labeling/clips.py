"""Writes for rollouts and clips: storing what the workers make, and the render claim.

Keyword-only, typed and atomic like ``services``. The trainer makes rollouts, cuts them into clips and renders
video, but it writes labeling's tables only through these functions.

The render claim: a clip is rendered by whoever moves it to RENDERING first (``clip_render_claim``, one
conditional UPDATE from PENDING or FAILED). A RENDERING clip whose claim is older than the stale limit
(``HERONRY["RUN_STALE_SECONDS"]``, the limit after which a loop step's worker is presumed dead) may be
claimed again: its worker died, or its database connection broke before it could finish or fail the clip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .errors import ValidationFailed
from .files import store_file
from .models import Clip, Project, RenderStatus, Rollout


@dataclass(frozen=True)
class ClipSegment:
    """One clip to cut from a rollout: steps ``start`` … ``start + length - 1``, with its per-segment sums."""

    start: int
    length: int
    factor_totals: Mapping[str, float]
    true_return: float | None = None


@transaction.atomic
def rollout_store(
    *,
    project: Project,
    policy: str,
    env_seed: int,
    n_steps: int,
    data: bytes,
    true_return: float | None,
    iteration: int = 0,
    run: int | None = None,
) -> Rollout:
    """Store a rollout's arrays (an ``.npz``; written whole or not at all) and its row."""
    rollout = Rollout(
        project=project,
        policy=policy,
        env_seed=env_seed,
        n_steps=n_steps,
        true_return=true_return,
        iteration=iteration,
        run=run,
    )
    store_file(rollout.data, f"{project.slug}-{env_seed}.npz", ContentFile(data))
    try:
        rollout.save()
    except Exception:
        with contextlib.suppress(OSError):
            rollout.data.storage.delete(str(rollout.data.name))
        raise
    return rollout


@transaction.atomic
def clips_create(*, rollout: Rollout, segments: Sequence[ClipSegment], video: bool = True) -> list[Clip]:
    """Cut ``rollout`` into clips (of its project and iteration); video is rendered later, on demand.

    ``video=False``: the rollout has nothing to make video from (an uploaded or imported episode with factors
    only); its clips are marked NO_VIDEO, so they are never rendered nor asked about in pairwise queries.
    """
    for segment in segments:
        if segment.length <= 0 or segment.start < 0 or segment.start + segment.length > rollout.n_steps:
            raise ValidationFailed(
                f"segment {segment.start}+{segment.length} is outside the rollout's {rollout.n_steps} steps"
            )
    clips = [
        Clip(
            project_id=rollout.project_id,
            rollout=rollout,
            start=segment.start,
            length=segment.length,
            factor_totals={key: float(value) for key, value in segment.factor_totals.items()},
            true_return=None if segment.true_return is None else float(segment.true_return),
            iteration=rollout.iteration,
            render_status=RenderStatus.PENDING if video else RenderStatus.NO_VIDEO,
        )
        for segment in segments
    ]
    return Clip.objects.bulk_create(clips)


def rollouts_delete(*, project: Project, run: int) -> int:
    """Delete the project's rollouts (and their clips) made by the trainer's run ``run`` (its id).

    A worker re-running a step whose earlier attempt died calls this first, so running twice leaves one result.
    """
    deleted, _ = Rollout.objects.filter(project=project, run=run).delete()
    return deleted


# --- rendering ------------------------------------------------------------------------------------------------


def render_stale_after() -> timedelta:
    """How old a RENDERING claim must be before another worker may take the clip over."""
    seconds = settings.HERONRY["RUN_STALE_SECONDS"]
    assert isinstance(seconds, int)  # parsed strictly in settings
    return timedelta(seconds=seconds)


def clip_render_claim(*, clip_id: int) -> bool:
    """Take the clip for rendering; True if this caller won it (exactly one of concurrent callers does).

    One conditional UPDATE: PENDING or FAILED → RENDERING, or a RENDERING claim gone stale (see the module).
    """
    now = timezone.now()
    claimable = Q(render_status__in=[RenderStatus.PENDING, RenderStatus.FAILED]) | Q(
        Q(render_started_at__lt=now - render_stale_after()) | Q(render_started_at__isnull=True),
        render_status=RenderStatus.RENDERING,
    )
    claimed = Clip.objects.filter(claimable, pk=clip_id).update(
        render_status=RenderStatus.RENDERING, render_started_at=now
    )
    return bool(claimed)


def clip_render_finish(*, clip: Clip, video: File, poster: File) -> bool:
    """Store a claimed clip's MP4 and poster and mark it READY; False if the clip was no longer being rendered.

    The files appear whole or not at all (``labeling.files.store_file``). If one cannot be stored, or the clip
    left RENDERING meanwhile (someone uploaded a video), what was stored is removed again, so a failed clip
    leaves nothing under its name. If the row update itself fails (a database error), the files are kept: the
    update may have committed unseen, and the row would then point at them.
    """
    project = clip.project
    storage = clip.video.storage
    stored: list[str] = []
    try:
        store_file(clip.video, f"{project.slug}/{clip.pk}.mp4", video)
        stored.append(str(clip.video.name))
        store_file(clip.poster, f"{project.slug}/{clip.pk}.jpg", poster)
        stored.append(str(clip.poster.name))
    except Exception:
        for name in stored:
            with contextlib.suppress(OSError):
                storage.delete(name)
        raise
    finished = Clip.objects.filter(pk=clip.pk, render_status=RenderStatus.RENDERING).update(
        video=clip.video.name,
        poster=clip.poster.name,
        render_status=RenderStatus.READY,
        render_error="",
        render_started_at=None,
    )
    if not finished:
        for name in stored:
            with contextlib.suppress(OSError):
                storage.delete(name)
        clip.refresh_from_db(fields=["video", "poster", "render_status", "render_error", "render_started_at"])
        return False
    clip.render_status, clip.render_error, clip.render_started_at = RenderStatus.READY, "", None
    return True


def clip_render_fail(*, clip_id: int, error: str) -> bool:
    """Record why rendering a claimed clip failed (shown to researchers); the clip may be claimed again."""
    failed = Clip.objects.filter(pk=clip_id, render_status=RenderStatus.RENDERING).update(
        render_status=RenderStatus.FAILED, render_error=error[:2000], render_started_at=None
    )
    return bool(failed)
