"""Queries asked for chosen pairs and their answers (labeling.services.queries_for_pairs,
labeling.selectors.query_answers): what imitation's preference gatherer builds on."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from labeling import assignment
from labeling.errors import ValidationFailed
from labeling.models import Query, QuerySource
from labeling.selectors import query_answers
from labeling.services import MAX_PAIRS_PER_REQUEST, membership_add, queries_create_random, queries_for_pairs
from tests.conftest import add_fake_clips, make_project

pytestmark = pytest.mark.django_db


def answer(project, user, choice: str) -> None:
    lease = assignment.lease_next_query(project=project, annotator=user).lease
    assert lease is not None
    # ``choice`` is about the canonical clips: map it to the sides this lease shows.
    shown = {"a": "right" if lease.swapped else "left", "b": "left" if lease.swapped else "right"}.get(choice, choice)
    assignment.judgment_submit(
        query_id=lease.query_id, annotator=user, choice=shown, lease_token=lease.token, client_id=uuid.uuid4()
    )


def test_pairs_are_asked_once_in_either_order_and_come_back_in_the_callers_order(researcher):
    project = make_project(researcher)
    a, b, c, d = (clip.pk for clip in add_fake_clips(project, 4))
    queries_create_random(
        project=project, count=1, rng=np.random.default_rng(0), clips=project.clips.filter(pk__in=[a, b])
    )
    rng = np.random.default_rng(1)
    first = queries_for_pairs(project=project, pairs=[(b, a), (d, c), (c, d)], rng=rng, priority=5)
    assert [(q.clip_a_id, q.clip_b_id) for q in first] == [(a, b), (c, d), (c, d)]
    assert first[0].source == QuerySource.RANDOM  # the random query already asking (a, b) answers it
    assert first[1].source == QuerySource.ACTIVE and first[1].priority == 5
    again = queries_for_pairs(project=project, pairs=[(c, d), (a, b)], rng=rng)
    assert [q.pk for q in again] == [first[1].pk, first[0].pk]
    assert Query.objects.filter(project=project).count() == 2


def test_bad_pairs_are_refused_and_nothing_is_stored(researcher):
    project = make_project(researcher)
    other = make_project(researcher, slug="other")
    a, b = (clip.pk for clip in add_fake_clips(project, 2))
    (foreign,) = (clip.pk for clip in add_fake_clips(other, 1))
    for pairs in ([(a, a)], [(a, b), (a, foreign)], [(a, b)] * (MAX_PAIRS_PER_REQUEST + 1)):
        with pytest.raises(ValidationFailed):
            queries_for_pairs(project=project, pairs=pairs, rng=np.random.default_rng(0))
    assert not Query.objects.exists()


def test_answers_are_counted_in_canonical_terms_with_ties_and_cant_tell(researcher, annotator, annotator2, outsider):
    project = make_project(researcher, overlap=3)
    for user in (annotator, annotator2, outsider):
        membership_add(project=project, user=user)
    a, b = (clip.pk for clip in add_fake_clips(project, 2))
    (query,) = queries_for_pairs(project=project, pairs=[(b, a)], rng=np.random.default_rng(0))
    (row,) = query_answers(project=project, query_ids=[query.pk])
    assert row["target_a"] is None and row["majority"] is None and row["status"] == "open"
    answer(project, annotator, "a")
    answer(project, annotator2, "equal")
    answer(project, outsider, "cant_tell")
    (row,) = query_answers(project=project, query_ids=[query.pk, 10**9])
    assert row["answers"] == {"a": 1, "b": 0, "equal": 1, "cant_tell": 1}
    assert row["answers_given"] == row["answers_wanted"] == 3 and row["status"] == "complete"
    assert row["target_a"] == pytest.approx(0.75) and row["majority"] == "a"
    other = make_project(researcher, slug="other")
    assert query_answers(project=other, query_ids=[query.pk]) == []  # another project's query is not there
