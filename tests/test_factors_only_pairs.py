"""Factors-only pairwise comparisons: two clips without video (data-only uploads and imports) are asked and
served as a pair compared by their factor totals; a pair mixing video with no video is refused."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.test import Client as PageClient
from django.urls import reverse

from labeling import assignment
from labeling.errors import ValidationFailed
from labeling.models import Clip, Query, RenderStatus, RewardFactor
from labeling.services import queries_for_pairs
from tests.conftest import add_fake_clips, api_client_for

pytestmark = pytest.mark.django_db


def data_only_clips(project, count: int) -> list[Clip]:
    clips = add_fake_clips(project, count, ready=False)
    Clip.objects.filter(pk__in=[clip.pk for clip in clips]).update(render_status=RenderStatus.NO_VIDEO)
    for clip in clips:
        clip.refresh_from_db()
    return clips


def test_a_pair_without_video_is_asked_and_served(project, annotator):
    a, b = data_only_clips(project, 2)
    (query,) = queries_for_pairs(project=project, pairs=[(b.pk, a.pk)], rng=np.random.default_rng(0))
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None and lease.query_id == query.pk
    result = assignment.judgment_submit(
        query_id=query.pk, annotator=annotator, choice="left", lease_token=lease.token, client_id=uuid.uuid4()
    )
    assert result.created


def test_mixed_pairs_and_factorless_projects_are_refused(project):
    (with_video,) = add_fake_clips(project, 1)
    a, b = data_only_clips(project, 2)
    with pytest.raises(ValidationFailed) as mixed:
        queries_for_pairs(project=project, pairs=[(a.pk, b.pk), (a.pk, with_video.pk)], rng=np.random.default_rng(0))
    assert "pairs" in mixed.value.fields and "one has video" in mixed.value.message
    RewardFactor.objects.filter(project=project).delete()
    with pytest.raises(ValidationFailed, match="no factors"):
        queries_for_pairs(project=project, pairs=[(a.pk, b.pk)], rng=np.random.default_rng(0))
    assert not Query.objects.exists()


def test_pending_clips_are_still_not_served(project, annotator):
    (pending,) = add_fake_clips(project, 1, ready=False)
    (ready,) = add_fake_clips(project, 1)
    queries_for_pairs(project=project, pairs=[(pending.pk, ready.pk)], rng=np.random.default_rng(0))
    result = assignment.lease_next_query(project=project, annotator=annotator)
    assert result.lease is None and result.reason == "waiting_for_next_iteration"


def test_the_api_refuses_a_mixed_pair_with_a_clear_400(project, researcher):
    (with_video,) = add_fake_clips(project, 1)
    (data_only,) = data_only_clips(project, 1)
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{project.slug}/queries/", {"pairs": [[with_video.pk, data_only.pk]]}, format="json"
    )
    assert response.status_code == 400
    assert "pairs" in response.json()["error"]["fields"]


def test_next_query_says_factors_only_and_carries_the_totals(project, annotator):
    a, b = data_only_clips(project, 2)
    queries_for_pairs(project=project, pairs=[(a.pk, b.pk)], rng=np.random.default_rng(0))
    query = api_client_for(annotator).post(f"/api/v1/projects/{project.slug}/queries/next/").json()["query"]
    assert query["factors_only"] is True
    assert [f["key"] for f in query["factors"]] == list(project.factors.values_list("key", flat=True))
    assert {"label", "unit", "direction"} <= set(query["factors"][0])
    by_id = {a.pk: a, b.pk: b}
    for side in ("left", "right"):
        shown = query[side]
        assert shown["has_video"] is False and shown["video_url"] is None
        assert shown["factor_totals"] == pytest.approx(by_id[shown["id"]].factor_totals)


def test_a_pair_with_video_keeps_its_numbers_hidden(project_with_queries, annotator):
    query = api_client_for(annotator).post(f"/api/v1/projects/{project_with_queries.slug}/queries/next/").json()
    query = query["query"]
    assert query["factors_only"] is False and query["factors"] is None
    assert query["left"]["has_video"] is True and query["left"]["factor_totals"] is None


def test_the_label_page_shows_factor_totals_instead_of_video(project, annotator):
    project.require_full_view = True  # nothing to watch: the answer buttons must not wait for videos
    project.save(update_fields=["require_full_view"])
    a, b = data_only_clips(project, 2)
    Clip.objects.filter(pk=a.pk).update(factor_totals={"angle_sq": 2.0, "angular_velocity_sq": -1.5, "torque_sq": 0})
    Clip.objects.filter(pk=b.pk).update(factor_totals={"angle_sq": 4.0, "angular_velocity_sq": 3.0, "torque_sq": 0})
    queries_for_pairs(project=project, pairs=[(a.pk, b.pk)], rng=np.random.default_rng(0))
    client = PageClient()
    client.force_login(annotator)
    page = client.get(reverse("label", args=[project.slug])).content.decode()
    assert "data-factors-only" in page and "<video" not in page
    assert "have no video" in page and "lower is better" in page
    assert 'value="50"' in page and 'value="100"' in page  # angle_sq: 2 and 4, scaled to the larger
    assert "data-requires-watch" not in page and 'data-key="ArrowLeft"' in page
