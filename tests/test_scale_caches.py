"""The caches that keep the researcher's pages fast at a million judgments (issue 14.6): the label tallies kept
current incrementally, and the quality report and the disagreement review left to a task for a big project."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from labeling import assignment, revisions, selectors
from labeling.models import Judgment, Query
from tests.conftest import add_fake_clips
from tests.test_review import _answer as _answer_a
from tests.test_review import _fake_model
from trainer import review
from trainer.models import ReviewScore


def _answer(project, user, choice: str) -> Judgment:
    lease = assignment.lease_next_query(project=project, annotator=user).lease
    assert lease is not None
    return assignment.judgment_submit(
        query_id=lease.query_id, annotator=user, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment


def _fresh(project, annotator=None) -> selectors.LabelCounts:
    """The counts computed from scratch (no cached tallies)."""
    cache.delete(selectors._label_tallies_key(project.pk))
    return selectors.label_counts(project=project, annotator=annotator)


@pytest.fixture
def many_queries(project):
    clips = add_fake_clips(project, 8)
    for i in range(0, 8, 2):
        for j in range(i + 1, 8):
            Query.objects.create(project=project, clip_a=clips[i], clip_b=clips[j], answers_wanted=2)
    return project


def test_label_tallies_stay_equal_to_a_fresh_count_through_answers_revisions_and_undo(
    many_queries, annotator, annotator2
):
    project = many_queries
    first = _answer(project, annotator, "left")
    _answer(project, annotator2, "cant_tell")
    cached = selectors.label_counts(project=project)  # cached now
    assert (cached.answered, cached.cant_tell) == (2, 1)
    # New answers are counted on top of the cached tallies...
    _answer(project, annotator, "cant_tell")
    latest = _answer(project, annotator2, "right")
    assert selectors.label_counts(project=project) == _fresh(project)
    selectors.label_counts(project=project)
    # ...a revision moves an answer in or out of "can't tell"...
    revisions.judgment_revise(judgment_id=first.pk, annotator=annotator, choice="cant_tell")
    counts = selectors.label_counts(project=project)
    assert counts == _fresh(project) and (counts.answered, counts.cant_tell) == (4, 3)
    assert selectors.label_counts(project=project, annotator=annotator) == _fresh(project, annotator)
    # ...and an undo (a deleted answer, no newer id) forgets them.
    selectors.label_counts(project=project)
    revisions.judgment_undo(judgment_id=latest.pk, annotator=annotator2)
    selectors.label_counts_forget(project.pk)  # on commit, which the test's transaction never reaches
    assert selectors.label_counts(project=project).answered == 3
    by_annotator = selectors.label_counts_by_annotator(project)
    assert by_annotator is not None
    assert sum(c.answered for c in by_annotator.values()) == 3
    assert by_annotator[annotator.username] == selectors.label_counts(project=project, annotator=annotator)


def test_a_big_projects_quality_section_says_computing_and_shows_the_counts(
    client, many_queries, researcher, annotator, monkeypatch
):
    project = many_queries
    _answer(project, annotator, "left")
    _answer(project, annotator, "cant_tell")
    queued = []
    monkeypatch.setattr(selectors, "QUALITY_REPORT_INLINE_ANSWERS", 1)
    monkeypatch.setattr("labeling.services.send_task_by_name", lambda name, *args: queued.append((name, args)))
    client.force_login(researcher)
    page = client.get(reverse("project-quality", args=[project.slug])).content.decode()
    assert 'data-quality="computing"' in page
    assert 'data-count="answered">2<' in page  # the counts are shown meanwhile
    assert queued == [("labeling.refresh_quality_report", (project.pk,))]
    # The worker's report is shown once it is there (and the task is queued once, not on every view).
    selectors.quality_report_refresh(project.pk)
    page = client.get(reverse("project-quality", args=[project.slug])).content.decode()
    assert 'data-quality="computing"' not in page and "Krippendorff" in page
    assert len(queued) == 1


@pytest.fixture
def judged(project, annotator, annotator2):
    """Four pairs both annotators say clip_a wins, scored by a model that is sure of the opposite on the last."""
    clips = add_fake_clips(project, 8)
    for i in range(4):
        Query.objects.create(project=project, clip_a=clips[2 * i], clip_b=clips[2 * i + 1], answers_wanted=2)
    for _ in range(4):
        _answer_a(project, annotator)
        _answer_a(project, annotator2)
    model = _fake_model(project)
    queries = list(Query.objects.filter(project=project).order_by("id"))
    for query, p in zip(queries, (0.9, 0.5, 0.6, 0.1), strict=True):
        ReviewScore.objects.create(reward_model=model, query=query, p_model=p, spread=0.01)
    return queries


def test_a_big_projects_review_is_computed_by_a_task_and_then_read_from_the_cache(
    client,
    project,
    judged,
    researcher,
    monkeypatch,
):
    queued = []
    monkeypatch.setattr(review, "REVIEW_INLINE_ANSWERS", 1)
    monkeypatch.setattr("labeling.services.send_task_by_name", lambda name, *args: queued.append((name, args)))
    client.force_login(researcher)
    page = client.get(reverse("project-review", args=[project.slug])).content.decode()
    assert 'data-review="computing"' in page
    assert review.review_count(project) is None
    overview = client.get(reverse("project-detail", args=[project.slug])).content.decode()
    assert "counting…" in overview
    assert queued == [("trainer.refresh_review_summary", (project.pk,))]
    review.review_summary_refresh(project.pk)
    page = client.get(reverse("project-review", args=[project.slug])).content.decode()
    assert page.index(f'id="review-{judged[3].pk}"') < page.index(f'id="review-{judged[0].pk}"')
    assert "1 pair to review" in page
    # A review action makes the cached order out of date: the last one is shown while the task recomputes.
    top = Judgment.objects.filter(query=judged[3]).first()
    client.post(reverse("project-review-action", args=[project.slug]), {"action": "exclude", "query": judged[3].pk,
                                                                          "judgment": top.pk})  # fmt: skip
    assert review.review_page(project).stale
    review.review_summary_refresh(project.pk)
    assert review.review_count(project) == 0 and not review.review_page(project).stale


def test_the_cached_counts_agree_on_the_overview_and_the_sections(client, many_queries, researcher, annotator):
    import re

    project = many_queries
    for choice in ("left", "cant_tell", "right"):
        _answer(project, annotator, choice)
    client.force_login(researcher)
    selectors.label_counts(project=project)  # cached, then one more answer counted incrementally
    _answer(project, annotator, "equal")
    for name in ("project-detail", "project-data", "project-quality"):
        page = client.get(reverse(name, args=[project.slug])).content.decode()
        assert set(re.findall(r'data-count="answered">(\d+)<', page)) == {"4"}, name
    mine = selectors.annotator_progress(project=project, annotator=annotator)
    assert (mine["judgments"], mine["cant_tell"]) == (4, 1)


def test_a_big_projects_label_counts_are_counted_by_a_task_while_the_pages_say_counting(
    client, many_queries, researcher, annotator, annotator2, monkeypatch
):
    import re

    from labeling import tasks

    project = many_queries
    for choice in ("left", "cant_tell"):
        _answer(project, annotator, choice)
    _answer(project, annotator2, "right")
    cache.clear()  # a cold worker: no tallies cached
    queued = []
    monkeypatch.setattr(selectors, "LABEL_TALLIES_INLINE_ANSWERS", 1)
    monkeypatch.setattr(selectors, "QUALITY_REPORT_INLINE_ANSWERS", 1)  # its task would count the tallies too
    monkeypatch.setattr("labeling.services.send_task_by_name", lambda name, *args: queued.append((name, args)))
    client.force_login(researcher)
    assert selectors.label_counts(project=project) == selectors.LabelCounts(counting=True)
    assert selectors.label_counts_by_annotator(project) is None
    # The annotator's own counts never wait for the task: their answers are an index range.
    assert selectors.label_counts(project=project, annotator=annotator).answered == 2
    for name in ("project-detail", "project-data", "project-quality"):
        url = reverse(name, args=[project.slug])
        for headers in ({}, {"HX-Request": "true"}):
            page = client.get(url, headers=headers).content.decode()
            assert 'data-labels="counting"' in page and f'hx-get="{url}"' in page, name  # it polls itself
            assert 'data-count="counting"' in page and 'data-count="answered"' not in page, name
    # Queued once, not on every view (a "counting" key de-duplicates until the task ends).
    assert [item for item in queued if item[0] == "labeling.refresh_label_tallies"] == [
        ("labeling.refresh_label_tallies", (project.pk,))
    ]
    tasks.refresh_label_tallies(project.pk)  # what the worker does
    assert cache.get(f"{selectors._label_tallies_key(project.pk)}:counting") is None
    counts = selectors.label_counts(project=project)
    assert (counts.answered, counts.cant_tell, counts.counting) == (3, 1, False)
    for name in ("project-detail", "project-data", "project-quality"):
        page = client.get(reverse(name, args=[project.slug])).content.decode()
        assert 'data-labels="counting"' not in page, name
        assert set(re.findall(r'data-count="answered">(\d+)<', page)) == {"3"}, name
    by_annotator = selectors.label_counts_by_annotator(project)
    assert by_annotator is not None and by_annotator[annotator.username].answered == 2


def test_a_queued_label_count_that_runs_in_process_is_shown_at_once(many_queries, annotator, monkeypatch):
    """Eager tasks (tests, no broker): the queued count has run by the time the page asks again."""
    project = many_queries
    _answer(project, annotator, "left")
    cache.clear()
    monkeypatch.setattr(selectors, "LABEL_TALLIES_INLINE_ANSWERS", 0)
    counts = selectors.label_counts(project=project)
    assert (counts.answered, counts.counting) == (1, False)


def test_a_failed_queueing_says_counting_and_tries_again_on_the_next_view(many_queries, annotator, monkeypatch):
    project = many_queries
    _answer(project, annotator, "left")
    cache.clear()
    calls = []

    def down(name, *args):
        calls.append(name)
        raise ConnectionError("broker down")

    monkeypatch.setattr(selectors, "LABEL_TALLIES_INLINE_ANSWERS", 0)
    monkeypatch.setattr("labeling.services.send_task_by_name", down)
    assert selectors.label_counts(project=project).counting
    assert selectors.label_counts(project=project).counting
    assert len(calls) == 2  # the "counting" key was dropped with the failure


def test_a_small_projects_label_counts_are_exact_at_once_and_queue_nothing(many_queries, annotator, monkeypatch):
    project = many_queries
    _answer(project, annotator, "cant_tell")
    cache.clear()
    queued = []
    monkeypatch.setattr("labeling.services.send_task_by_name", lambda name, *args: queued.append((name, args)))
    counts = selectors.label_counts(project=project)
    assert (counts.answered, counts.cant_tell, counts.counting) == (1, 1, False) and queued == []


@pytest.fixture
def many_judged(project, annotator, annotator2):
    """23 pairs answered by both annotators (mixed answers), scored at random by a ready model."""
    import random

    from labeling import services

    clips = add_fake_clips(project, 24)
    for i in range(23):
        Query.objects.create(project=project, clip_a=clips[i], clip_b=clips[i + 1], answers_wanted=2)
    rng = random.Random(7)
    for _ in range(23):
        _answer_a(project, annotator, rng.choice([True, False, None]))
        _answer_a(project, annotator2, rng.choice([True, False]))
    model = _fake_model(project)
    for query in Query.objects.filter(project=project):
        ReviewScore.objects.create(reward_model=model, query=query, p_model=rng.random(), spread=0.1 * rng.random())
    # A judgment marked wrong leaves its pair's majority (and so the order) to the other one.
    marked = Judgment.objects.filter(query__project=project).order_by("id")[5]
    services.judgment_exclude(project=project, judgment_id=marked.pk, by=project.memberships.first().user)
    return project


def _pages(project, page_size: int) -> list[int]:
    ids: list[int] = []
    first = review.review_page(project, page=1, page_size=page_size)
    for number in range(1, first.pages + 1):
        page = review.review_page(project, page=number, page_size=page_size)
        assert not page.computing and page.page == number
        ids += [row["score"].query_id for row in page.rows]
    return ids


def test_every_review_page_deeper_than_a_chunk_equals_the_live_ordering(many_judged, monkeypatch):
    project = many_judged
    monkeypatch.setattr(review, "REVIEW_ORDER_CHUNK", 4)  # pages of 3 straddle chunks of 4 ids
    live = list(review.review_rows(project).values_list("query_id", flat=True))
    assert len(live) == 23
    assert _pages(project, 3) == live
    summary = cache.get(review._summary_key(project.pk))
    assert "order" not in summary and summary["order_chunks"] == 6 and summary["total"] == 23
    # The rows stay live: marking a judgment wrong changes the order; the refreshed cache follows it.
    from labeling import services

    top = review.review_page(project, page=1, page_size=3).rows[0]
    judgment = top["judgments"][0]["judgment"]
    services.judgment_exclude(project=project, judgment_id=judgment.pk, by=project.memberships.first().user)
    review.review_summary_refresh(project.pk)
    assert _pages(project, 3) == list(review.review_rows(project).values_list("query_id", flat=True))


def test_a_big_projects_deep_review_pages_come_from_the_tasks_order(many_judged, monkeypatch):
    project = many_judged
    monkeypatch.setattr(review, "REVIEW_ORDER_CHUNK", 5)
    monkeypatch.setattr(review, "REVIEW_INLINE_ANSWERS", 1)
    queued = []
    monkeypatch.setattr("labeling.services.send_task_by_name", lambda name, *args: queued.append((name, args)))
    assert review.review_page(project, page=4, page_size=3).computing
    review.review_summary_refresh(project.pk)  # what the worker does
    old = cache.get(review._summary_key(project.pk))
    live = list(review.review_rows(project).values_list("query_id", flat=True))
    assert _pages(project, 3) == live
    # A refresh replaces the order under a new token and drops the old chunks (they would linger a day).
    cache.set(review._summary_key(project.pk), {**old, "stamp": None})  # out of date
    review.review_summary_refresh(project.pk)
    new = cache.get(review._summary_key(project.pk))
    assert new["order_token"] != old["order_token"]
    assert cache.get(review._order_key(project.pk, old["order_token"], 0)) is None
    assert _pages(project, 3) == live


def test_an_evicted_order_chunk_serves_the_page_live_and_drops_the_summary(many_judged, monkeypatch):
    project = many_judged
    monkeypatch.setattr(review, "REVIEW_ORDER_CHUNK", 4)
    live = list(review.review_rows(project).values_list("query_id", flat=True))
    review.review_page(project, page=1, page_size=3)  # computed in the request (small project), cached
    summary = cache.get(review._summary_key(project.pk))
    cache.delete(review._order_key(project.pk, summary["order_token"], 3))  # ids 12..15: page 5 of 3
    page = review.review_page(project, page=5, page_size=3)
    assert [row["score"].query_id for row in page.rows] == live[12:15]
    assert cache.get(review._summary_key(project.pk)) is None  # computed again on the next view
    assert _pages(project, 3) == live
