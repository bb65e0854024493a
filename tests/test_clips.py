"""labeling.clips: the services through which workers store rollouts and clips, and the exclusive render claim."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone

from labeling.clips import (
    ClipSegment,
    clip_render_claim,
    clip_render_fail,
    clip_render_finish,
    clips_create,
    rollout_store,
    rollouts_delete,
)
from labeling.errors import ValidationFailed
from labeling.models import Clip, Query, QuerySource, RenderStatus, Rollout
from labeling.services import queries_create_random, queries_publish
from tests.conftest import add_fake_clips, make_project

pytestmark = pytest.mark.django_db


def _stored(project, *, iteration=0, run=None, n_steps=100):
    rollout = rollout_store(
        project=project,
        policy="random",
        env_seed=7,
        n_steps=n_steps,
        data=b"npz bytes",
        true_return=-3.0,
        iteration=iteration,
        run=run,
    )
    clips = clips_create(
        rollout=rollout,
        segments=[ClipSegment(start=s, length=50, factor_totals={"x": s}, true_return=-1.0) for s in (0, 50)],
    )
    return rollout, clips


def test_rollout_store_writes_the_file_and_the_row_and_clips_follow_the_rollout(researcher):
    project = make_project(researcher)
    rollout, clips = _stored(project, iteration=3, run=12)
    with rollout.data.open("rb") as handle:
        assert handle.read() == b"npz bytes"
    assert [(c.start, c.iteration, c.render_status) for c in clips] == [(0, 3, "pending"), (50, 3, "pending")]
    assert {c.project_id for c in clips} == {project.pk}
    with pytest.raises(ValidationFailed):
        clips_create(rollout=rollout, segments=[ClipSegment(start=80, length=50, factor_totals={})])
    assert rollouts_delete(project=project, run=11) == 0
    assert rollouts_delete(project=project, run=12) > 0
    assert not Rollout.objects.exists() and not Clip.objects.exists()


def test_two_render_claims_one_wins(researcher):
    project = make_project(researcher)
    clip = add_fake_clips(project, 1, ready=False)[0]
    assert clip_render_claim(clip_id=clip.pk) is True
    assert clip_render_claim(clip_id=clip.pk) is False  # the second delivery renders nothing
    clip.refresh_from_db()
    assert clip.render_status == RenderStatus.RENDERING and clip.render_started_at is not None


def test_a_stale_rendering_claim_may_be_taken_over_and_failed_or_ready_clips_behave(researcher):
    project = make_project(researcher)
    clip = add_fake_clips(project, 1, ready=False)[0]
    assert clip_render_claim(clip_id=clip.pk)
    stale = timezone.now() - timedelta(seconds=django_settings.HERONRY["RUN_STALE_SECONDS"] + 1)
    Clip.objects.filter(pk=clip.pk).update(render_started_at=stale)  # its worker died
    assert clip_render_claim(clip_id=clip.pk) is True
    assert clip_render_fail(clip_id=clip.pk, error="boom") is True
    clip.refresh_from_db()
    assert (clip.render_status, clip.render_error, clip.render_started_at) == (RenderStatus.FAILED, "boom", None)
    assert clip_render_claim(clip_id=clip.pk) is True  # a failed clip may be rendered again
    assert clip_render_finish(clip=clip, video=ContentFile(b"mp4"), poster=ContentFile(b"jpg")) is True
    clip.refresh_from_db()
    assert clip.render_status == RenderStatus.READY and clip.video and clip.poster and not clip.render_error
    assert clip_render_claim(clip_id=clip.pk) is False  # a ready clip is never rendered again
    assert clip_render_fail(clip_id=clip.pk, error="late") is False


def test_finishing_a_clip_that_left_rendering_keeps_nothing(researcher):
    project = make_project(researcher)
    clip = add_fake_clips(project, 1, ready=False)[0]
    assert clip_render_claim(clip_id=clip.pk)
    Clip.objects.filter(pk=clip.pk).update(render_status=RenderStatus.PENDING)  # e.g. reset meanwhile
    storage = clip.video.storage
    assert clip_render_finish(clip=clip, video=ContentFile(b"mp4"), poster=ContentFile(b"jpg")) is False
    left = [name for _, _, files in os.walk(storage.location) for name in files if name.endswith((".mp4", ".jpg"))]
    assert not left
    clip.refresh_from_db()
    assert clip.render_status == RenderStatus.PENDING and not clip.video


@pytest.mark.skipif(
    "postgresql" not in django_settings.DATABASES["default"]["ENGINE"], reason="needs PostgreSQL (concurrent writers)"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_render_claims_exactly_one_wins(researcher):
    project = make_project(researcher, slug="claims")
    clips = add_fake_clips(project, 5, ready=False)
    for clip in clips:
        barrier = threading.Barrier(6)
        results: list[bool] = []

        def claim(clip_id=clip.pk, barrier=barrier, results=results) -> None:
            try:
                barrier.wait()
                results.append(clip_render_claim(clip_id=clip_id))
            finally:
                connection.close()

        threads = [threading.Thread(target=claim) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 5 + [True]


def test_queries_publish_canonical_once_and_only_the_projects_clips(researcher):
    project = make_project(researcher, overlap=2)
    a, b, c = (clip.pk for clip in add_fake_clips(project, 3))
    rng = np.random.default_rng(0)
    created = queries_publish(
        project=project,
        pairs=[(b, a), (a, c), (a, b)],
        uncertainties=[0.5, None, 0.9],
        source=QuerySource.ACTIVE,
        iteration=4,
        priority=4,
        rng=rng,
    )
    assert created == 2
    rows = sorted(Query.objects.values_list("clip_a_id", "clip_b_id", "uncertainty", "answers_wanted", "priority"))
    assert rows == [(a, b, 0.5, 2, 4), (a, c, None, 2, 4)]
    assert queries_publish(project=project, pairs=[(a, b)], source=QuerySource.RANDOM, rng=rng) == 0
    other = add_fake_clips(make_project(researcher, slug="other"), 1)[0]
    with pytest.raises(ValidationFailed):
        queries_publish(project=project, pairs=[(a, other.pk)], source=QuerySource.RANDOM, rng=rng)
    with pytest.raises(ValidationFailed):
        queries_publish(project=project, pairs=[(a, a)], source=QuerySource.RANDOM, rng=rng)
    with pytest.raises(ValidationFailed):
        queries_publish(project=project, pairs=[(a, c)], source=QuerySource.GOLD, rng=rng)
    # The random fallback publishes through the same service: the remaining pair (b, c) only.
    assert queries_create_random(project=project, count=10, rng=rng) == 1
    assert Query.objects.count() == 3
