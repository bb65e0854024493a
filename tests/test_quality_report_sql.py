"""The dashboard's quality report from SQL aggregates equals the one built from every judgment, and its cache
follows new, changed and taken-back answers."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from accounts.models import Role
from accounts.services import user_create
from labeling import quality, quality_control, revisions
from labeling.models import Judgment, JudgmentRevision, Query, QuerySource
from labeling.selectors import quality_report, quality_report_compute
from labeling.services import membership_add, queries_create_random
from tests.conftest import add_fake_clips, make_project


def _reference_report(project) -> dict:
    """The report as it was computed before the SQL path: one Answer per judgment, statistics in Python."""
    judgments = list(Judgment.objects.filter(query__project=project).select_related("query", "annotator"))
    answers = quality_control.answers_of(judgments)
    gold = {j.query_id: j.query.gold_answer for j in judgments if j.query.source == QuerySource.GOLD}
    repeats = {j.query_id: j.query.repeat_of_id for j in judgments if j.query.repeat_of_id}
    ordinary = [
        a for a, j in zip(answers, judgments, strict=True) if j.query.source in (QuerySource.RANDOM, QuerySource.ACTIVE)
    ]
    return {
        "rows": quality.annotator_report(answers, gold=gold, repeats=repeats),
        "alpha": quality.krippendorff_alpha(ordinary),
        "kappa": quality.fleiss_kappa(ordinary),
        "n_answers": len(answers),
    }


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def _answer(query: Query, user, rng: np.random.Generator) -> Judgment:
    return Judgment.objects.create(
        query=query,
        annotator=user,
        choice=["left", "right", "equal", "cant_tell"][int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))],
        swapped=bool(rng.random() < 0.5),
        client_id=uuid.uuid4(),
    )


@pytest.fixture
def busy_project(researcher):
    rng = np.random.default_rng(7)
    project = make_project(researcher, slug="busy", overlap=3)
    users = [user_create(username=f"ann{i}", password="x-Pass-9876", role=Role.ANNOTATOR) for i in range(5)]
    for user in users:
        membership_add(project=project, user=user)
    clips = add_fake_clips(project, 14)
    queries_create_random(project=project, count=40, rng=rng, clips=clips)
    quality_control.gold_queries_create(project=project, count=6, rng=np.random.default_rng(1))
    for query in Query.objects.filter(project=project).order_by("id"):
        who = rng.choice(len(users), size=int(rng.integers(1, 4)), replace=False)
        for i in who:
            judgment = _answer(query, users[i], rng)
            if query.source == QuerySource.RANDOM and rng.random() < 0.3:
                repeat = Query.objects.create(
                    project=project, clip_a_id=query.clip_a_id, clip_b_id=query.clip_b_id, source=QuerySource.REPEAT,
                    repeat_of=query, assigned_to=users[i], answers_wanted=1,
                )  # fmt: skip
                _answer(repeat, judgment.annotator, rng)
    return project, users, rng


def test_sql_report_equals_the_per_judgment_report(busy_project):
    project, _users, _rng = busy_project
    got, want = quality_report_compute(project), _reference_report(project)
    assert got["n_answers"] == want["n_answers"] > 100
    assert _same(got["alpha"], want["alpha"]) and _same(got["kappa"], want["kappa"])
    assert not math.isnan(got["alpha"])
    assert [r["row"] for r in got["rows"]] == want["rows"]  # dataclasses compare field by field (NaN != NaN aside)


def test_report_cache_follows_new_changed_and_removed_answers(busy_project, django_capture_on_commit_callbacks):
    project, users, _rng = busy_project
    first = quality_report(project)
    assert quality_report(project) is not None
    query = Query.objects.filter(project=project, source=QuerySource.RANDOM).exclude(judgments__annotator=users[0])[0]
    judgment = Judgment.objects.create(query=query, annotator=users[0], choice="left", client_id=uuid.uuid4())
    second = quality_report(project)
    assert second["n_answers"] == first["n_answers"] + 1
    Judgment.objects.filter(pk=judgment.pk).update(choice="cant_tell")
    JudgmentRevision.objects.create(judgment=judgment, previous_choice="left", new_choice="cant_tell")
    third = quality_report(project)
    cant_tell = {r["row"].annotator: r["row"].cant_tell for r in third["rows"]}
    assert cant_tell["ann0"] == {r["row"].annotator: r["row"].cant_tell for r in second["rows"]}["ann0"] + 1
    # An undo deletes the judgment (no newer id to see): it forgets the cached report.
    with django_capture_on_commit_callbacks(execute=True):
        revisions.judgment_undo(judgment_id=judgment.pk, annotator=users[0])
    assert quality_report(project)["n_answers"] == third["n_answers"] - 1


def test_an_out_of_date_report_is_shown_while_a_task_recomputes_it(busy_project, monkeypatch, settings, tmp_path):
    from labeling import events, services, tasks

    # A cache the web process and the worker share (Redis in production): a file cache stands in for it here.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }

    project, users, _rng = busy_project
    first = quality_report(project)
    assert first["stale"] is False
    queued = []
    monkeypatch.setattr(services, "send_task_by_name", lambda name, *args: queued.append((name, *args)))
    query = Query.objects.filter(project=project, source=QuerySource.RANDOM).exclude(judgments__annotator=users[1])[0]
    Judgment.objects.create(query=query, annotator=users[1], choice="equal", client_id=uuid.uuid4())
    shown = quality_report(project)
    assert shown["stale"] is True and shown["n_answers"] == first["n_answers"]  # the last one, marked
    quality_report(project)
    assert queued == [(events.REFRESH_QUALITY_REPORT, project.pk)]  # one refresh at a time
    tasks.refresh_quality_report(project.pk)  # what the worker does
    fresh = quality_report(project)
    assert fresh["stale"] is False and fresh["n_answers"] == first["n_answers"] + 1


def test_with_a_per_process_cache_an_out_of_date_report_is_recomputed_in_the_request(busy_project, monkeypatch):
    from labeling import services

    project, users, _rng = busy_project
    first = quality_report(project)
    monkeypatch.setattr(services, "send_task_by_name", lambda *args: pytest.fail("no task: its result would be lost"))
    query = Query.objects.filter(project=project, source=QuerySource.RANDOM).exclude(judgments__annotator=users[1])[0]
    Judgment.objects.create(query=query, annotator=users[1], choice="equal", client_id=uuid.uuid4())
    fresh = quality_report(project)
    assert fresh["stale"] is False and fresh["n_answers"] == first["n_answers"] + 1
