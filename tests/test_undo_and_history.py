"""Annotators can take back their last answer for a short while, and revise older ones (revisions kept)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import assignment, revisions
from labeling.models import Judgment, JudgmentRevision, Query
from tests.conftest import PASSWORD


def answer(project, user, choice="left"):
    lease = assignment.lease_next_query(project=project, annotator=user).lease
    return assignment.judgment_submit(
        query_id=lease.query_id, annotator=user, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment


def test_undo_brings_the_same_pair_back_as_it_was_shown(project_with_queries, annotator):
    judgment = answer(project_with_queries, annotator)
    query_id, swapped = judgment.query_id, judgment.swapped
    assert Query.objects.get(pk=query_id).answers_given == 1
    revisions.judgment_undo(judgment_id=judgment.pk, annotator=annotator)
    assert not Judgment.objects.filter(pk=judgment.pk).exists()
    assert Query.objects.get(pk=query_id).answers_given == 0
    again = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    assert again.query_id == query_id and again.swapped == swapped
    redo = assignment.judgment_submit(
        query_id=query_id, annotator=annotator, choice="right", lease_token=again.token, client_id=uuid.uuid4()
    )
    assert redo.created and redo.judgment.choice == "right"


def test_undo_only_the_last_answer_and_only_for_a_short_while(project_with_queries, annotator):
    first = answer(project_with_queries, annotator)
    second = answer(project_with_queries, annotator)
    with pytest.raises(revisions.UndoExpired):
        revisions.judgment_undo(judgment_id=first.pk, annotator=annotator)
    Judgment.objects.filter(pk=second.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    with pytest.raises(revisions.UndoExpired):
        revisions.judgment_undo(judgment_id=second.pk, annotator=annotator)


def test_nobody_undoes_someone_elses_answer(project_with_queries, annotator, annotator2):
    judgment = answer(project_with_queries, annotator)
    from labeling.errors import NotFound

    with pytest.raises(NotFound):
        revisions.judgment_undo(judgment_id=judgment.pk, annotator=annotator2)


def test_revisions_are_kept(project_with_queries, annotator):
    judgment = answer(project_with_queries, annotator, "left")
    revisions.judgment_revise(judgment_id=judgment.pk, annotator=annotator, choice="equal")
    revisions.judgment_revise(judgment_id=judgment.pk, annotator=annotator, choice="right")
    judgment.refresh_from_db()
    assert judgment.choice == "right"
    assert list(JudgmentRevision.objects.values_list("previous_choice", "new_choice")) == [
        ("left", "equal"),
        ("equal", "right"),
    ]


def test_undo_and_history_pages(client, project_with_queries, annotator):
    client.post(reverse("login"), {"username": annotator.username, "password": PASSWORD})
    page = client.get(reverse("label", args=[project_with_queries.slug])).content.decode()
    assert "data-instructions" not in page or '<details class="card instructions" data-instructions=' in page
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    fragment = client.post(
        reverse("label-judge", args=[project_with_queries.slug]), {**fields, "choice": "left"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'data-key="u"' in fragment
    judgment = Judgment.objects.get()
    undone = client.post(
        reverse("label-undo", args=[project_with_queries.slug]), {"judgment": judgment.pk}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "taken back" in undone and f'name="query" value="{fields["query"]}"' in undone
    assert not Judgment.objects.exists()
    answer(project_with_queries, annotator, "left")
    history = client.get(reverse("history", args=[project_with_queries.slug])).content.decode()
    judgment = Judgment.objects.get()
    assert f'id="judgment-{judgment.pk}"' in history
    row = client.post(
        reverse("history", args=[project_with_queries.slug]),
        {"judgment": judgment.pk, "choice": "cant_tell"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert row.startswith(f'<tr id="judgment-{judgment.pk}"') and "revised 1×" in row
    assert (
        client.post(
            reverse("history", args=[project_with_queries.slug]), {"judgment": judgment.pk, "choice": "sideways"}
        ).status_code
        == 400
    )


def test_undo_and_revise_through_the_api(project_with_queries, annotator, annotator2):
    from tests.conftest import api_client_for

    client = api_client_for(annotator)
    judgment = answer(project_with_queries, annotator, "left")
    assert (
        api_client_for(annotator2)
        .patch(f"/api/v1/judgments/{judgment.pk}/", {"choice": "right"}, format="json")
        .status_code
        == 404
    )
    bad = client.patch(f"/api/v1/judgments/{judgment.pk}/", {"choice": "up"}, format="json")
    assert bad.status_code == 400 and "choice" in bad.json()["error"]["fields"]
    revised = client.patch(f"/api/v1/judgments/{judgment.pk}/", {"choice": "equal"}, format="json")
    assert revised.status_code == 200 and revised.json()["choice"] == "equal"
    undone = client.post(f"/api/v1/judgments/{judgment.pk}/undo/")
    assert undone.status_code == 200 and undone.json()["query"]["id"] == judgment.query_id
    assert client.post(f"/api/v1/judgments/{judgment.pk}/undo/").status_code == 404
