"""Gold questions at a rate, repeats shown reversed, and qualification before real work."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from labeling import assignment, quality_control
from labeling.models import Judgment, Membership, Query, QuerySource
from labeling.services import queries_create_random
from tests.conftest import add_fake_clips, make_project


@pytest.fixture
def project_factory_twin(researcher, annotator):
    from labeling.services import membership_add

    twin = make_project(researcher, slug="twin")
    membership_add(project=twin, user=annotator)
    return twin


def setup_project(project, *, gold=10, queries=20):
    clips = add_fake_clips(project, 12)
    queries_create_random(project=project, count=queries, rng=np.random.default_rng(0), clips=clips)
    created = quality_control.gold_queries_create(project=project, count=gold, rng=np.random.default_rng(1))
    assert created == gold
    return project


def answer_next(project, user, *, correct_gold=True):
    result = assignment.lease_next_query(project=project, annotator=user)
    if result.lease is None:
        return None, result.reason
    lease = result.lease
    query = Query.objects.get(pk=lease.query_id)
    if query.source == QuerySource.GOLD:
        a_is_better = query.gold_answer == "a"
        if not correct_gold:
            a_is_better = not a_is_better
    else:
        a_is_better = True
    left_is_a = not lease.swapped
    choice = "left" if a_is_better == left_is_a else "right"
    judgment = assignment.judgment_submit(
        query_id=query.pk, annotator=user, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment
    return judgment, None


def test_gold_questions_have_clear_known_answers(project):
    setup_project(project)
    for gold in Query.objects.filter(source=QuerySource.GOLD).select_related("clip_a", "clip_b"):
        better = "a" if gold.clip_a.true_return > gold.clip_b.true_return else "b"
        assert gold.gold_answer == better and gold.clip_a_id < gold.clip_b_id


def test_gold_is_mixed_in_at_the_projects_rate_and_not_otherwise(project, project_factory_twin, annotator):
    setup_project(project)
    sources = [answer_next(project, annotator)[0].query.source for _ in range(20)]
    assert QuerySource.GOLD not in sources  # gold_rate 0: none

    twin = setup_project(project_factory_twin)
    twin.gold_rate = 0.5
    twin.save()
    mixed = []
    while (judgment := answer_next(twin, annotator)[0]) is not None:
        mixed.append(judgment.query.source)
    assert mixed.count(QuerySource.RANDOM) == 20
    # Each request is gold with probability 0.5 while gold lasts (10 questions): ≥3 is all but certain.
    assert 3 <= mixed.count(QuerySource.GOLD) <= 10
    assert (
        len({j.query_id for j in Judgment.objects.filter(annotator=annotator)})
        == Judgment.objects.filter(annotator=annotator).count()
    )


def test_ordinary_work_done_means_done_even_with_gold_left(project, annotator):
    setup_project(project, queries=3)
    for _ in range(3):
        answer_next(project, annotator)
    assert assignment.lease_next_query(project=project, annotator=annotator).reason == assignment.NothingToDo.DONE


def test_repeats_come_back_reversed_and_measure_self_consistency(project, annotator):
    from labeling.selectors import quality_report

    setup_project(project)
    project.repeat_rate = 0.5
    project.save()
    originals: dict[int, Judgment] = {}
    for _ in range(60):
        judgment, _reason = answer_next(project, annotator)
        if judgment is None:
            break
        query = judgment.query
        if query.source == QuerySource.REPEAT:
            first = originals[query.repeat_of_id]
            assert judgment.swapped == (not first.swapped)  # the same pair, sides reversed
            assert query.assigned_to_id == annotator.pk
        else:
            originals[query.pk] = judgment
    repeats = Judgment.objects.filter(query__source=QuerySource.REPEAT)
    assert repeats.exists()
    row = quality_report(project)["rows"][0]["row"]
    assert row.self_consistency.n == repeats.count() and row.self_consistency.value == 1.0


def test_qualification_gates_real_work(project, annotator, annotator2):
    setup_project(project)
    project.qualification_size = 4
    project.qualification_threshold = 0.75
    project.save()
    for _ in range(4):
        judgment, _ = answer_next(project, annotator, correct_gold=True)
        assert judgment.query.source == QuerySource.GOLD
    judgment, _ = answer_next(project, annotator)
    assert judgment.query.source == QuerySource.RANDOM
    assert Membership.objects.get(project=project, user=annotator).qualified_at is not None
    for _ in range(4):
        judgment, _ = answer_next(project, annotator2, correct_gold=False)
        assert judgment.query.source == QuerySource.GOLD
    _, reason = answer_next(project, annotator2)
    assert reason == assignment.NothingToDo.NOT_QUALIFIED


def test_gold_accuracy_on_the_quality_report(project, annotator):
    from labeling.selectors import quality_report

    setup_project(project)
    project.qualification_size = 5
    project.qualification_threshold = 0.0
    project.save()
    random.seed(0)
    for _ in range(5):
        answer_next(project, annotator, correct_gold=True)
    row = quality_report(project)["rows"][0]["row"]
    assert (row.gold.n, row.gold.hits) == (5, 5)


def test_cant_tell_on_gold_is_neither_right_nor_wrong(project, annotator):
    """One rule for qualification and the dashboard: "can't tell" is left out of gold accuracy, counted apart."""
    from labeling.selectors import quality_report

    setup_project(project)
    project.qualification_size = 2
    project.qualification_threshold = 1.0
    project.save()
    for choice in ("cant_tell", "cant_tell", None, None):
        lease = assignment.lease_next_query(project=project, annotator=annotator).lease
        query = Query.objects.get(pk=lease.query_id)
        assert query.source == QuerySource.GOLD  # can't-tell answers do not use up the qualification
        if choice is None:
            left, _right = lease.shown_clips()
            better = query.clip_a_id if query.gold_answer == "a" else query.clip_b_id
            choice = "left" if left.pk == better else "right"
        assignment.judgment_submit(
            query_id=query.pk, annotator=annotator, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
        )
    score = quality_control.gold_accuracy(project=project, annotator=annotator)
    assert (score.n, score.hits, score.value) == (2, 2, 1.0)
    judgment, _ = answer_next(project, annotator)
    assert judgment.query.source == QuerySource.RANDOM  # qualified: 2 of 2 graded answers right
    row = quality_report(project)["rows"][0]["row"]
    assert (row.gold.n, row.gold.hits, row.cant_tell) == (2, 2, 2)
