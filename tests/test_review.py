"""Disagreement review: scores per reward model, the humans' live majority, and the three review actions."""

from __future__ import annotations

import csv
import io
import uuid

import pyarrow.parquet as pq
import pytest

from labeling import assignment
from labeling.models import Judgment, Membership, Query
from tests.conftest import add_fake_clips, api_client_for
from tests.test_rankings_and_reward_models import SMALL_MODEL, make_clips
from trainer import review
from trainer.models import PreferenceSet, ReviewScore, RewardModel, RewardModelStatus


def _answer(project, annotator, choice_for_a: bool | None = True) -> Judgment:
    """Lease the next pair and answer that clip_a is better (True), worse (False) or equal (None)."""
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    if choice_for_a is None:
        choice = "equal"
    else:
        left_is_a = not lease.swapped
        choice = "left" if choice_for_a == left_is_a else "right"
    return assignment.judgment_submit(
        query_id=lease.query_id, annotator=annotator, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment


def _fake_model(project, preference_set=None) -> RewardModel:
    if preference_set is None:
        preference_set = PreferenceSet.objects.create(project=project, sources="judgments", checksum="0" * 64)
    return RewardModel.objects.create(
        project=project, version=1, preference_set=preference_set, status=RewardModelStatus.READY
    )


@pytest.fixture
def judged(project, annotator, annotator2):
    """Four pairs, each answered "clip_a is better" by both annotators, and a ready model scoring them."""
    clips = add_fake_clips(project, 8)
    for i in range(4):
        Query.objects.create(project=project, clip_a=clips[2 * i], clip_b=clips[2 * i + 1], answers_wanted=2)
    for _ in range(4):
        _answer(project, annotator)
        _answer(project, annotator2)
    model = _fake_model(project)
    # The model agrees on the first pair, is unsure on the second, and disagrees on the last two — the last one
    # more confidently, the third with a wide spread.
    p_and_spread = [(0.9, 0.01), (0.5, 0.01), (0.35, 0.3), (0.1, 0.01)]
    queries = list(Query.objects.filter(project=project).order_by("id"))
    for query, (p, spread) in zip(queries, p_and_spread, strict=True):
        ReviewScore.objects.create(reward_model=model, query=query, p_model=p, spread=spread)
    return queries


def test_review_orders_confident_disagreements_first_and_counts_them(project, judged):
    rows = list(review.review_rows(project))
    assert [r.query_id for r in rows] == [judged[3].pk, judged[2].pk, judged[1].pk, judged[0].pk]
    assert rows[0].p_human == 1.0 and rows[0].answers == 2
    assert rows[0].disagreement == pytest.approx(0.5 * 0.4 * 4 - 0.01)
    # The wide spread keeps the third pair below the threshold: the members themselves are unsure.
    assert review.review_count(project) == 1


def test_marking_wrong_and_sending_back_take_a_pair_off_the_count(project, judged, researcher, annotator):
    top = judged[3]
    judgment = Judgment.objects.get(query=top, annotator=annotator)
    client = api_client_for(researcher)
    base = f"/api/v1/projects/{project.slug}/review/"
    response = client.post(f"{base}judgments/{judgment.pk}/exclude", {"reason": "clearly wrong"}, format="json")
    assert response.status_code == 200, response.content
    assert review.review_count(project) == 0
    row = next(r for r in client.get(base).json()["results"] if r["query"] == top.pk)
    assert row["answers"] == 1  # the excluded answer no longer counts for the humans' side
    assert any(j["exclusion_reason"] == "clearly wrong" for j in row["judgments"])
    assert client.post(f"{base}judgments/{judgment.pk}/exclude", {"undo": True}, format="json").status_code == 200
    assert review.review_count(project) == 1

    response = client.post(f"{base}queries/{top.pk}/send-back", {"extra": 2}, format="json")
    assert response.status_code == 200, response.content
    top.refresh_from_db()
    assert top.status == "open" and top.answers_wanted == 4 and top.answers_given == 2
    assert review.review_count(project) == 0


def test_flag_annotator_and_bad_input(project, judged, researcher, annotator):
    client = api_client_for(researcher)
    base = f"/api/v1/projects/{project.slug}/review/"
    response = client.post(f"{base}annotators/{annotator.pk}/flag", {"reason": "answers at random"}, format="json")
    assert response.status_code == 200, response.content
    membership = Membership.objects.get(project=project, user=annotator)
    assert membership.flagged_at is not None and membership.flag_reason == "answers at random"
    first = client.get(base).json()["results"][0]
    assert {j["annotator"]: j["annotator_flagged"] for j in first["judgments"]} == {"anna": True, "ben": False}
    bad = [
        (f"{base}annotators/{annotator.pk}/flag", {"reason": "x" * 501}),
        (f"{base}queries/{judged[0].pk}/send-back", {"extra": 0}),
        (f"{base}queries/{judged[0].pk}/send-back", {"extra": "many"}),
        (f"{base}judgments/999999/exclude", {}),
    ]
    for url, body in bad:
        response = client.post(url, body, format="json")
        assert 400 <= response.status_code < 500, (url, response.content)
        assert "error" in response.json()
    assert client.get(f"{base}?page=abc").status_code == 400


def test_an_excluded_judgment_is_not_in_the_next_preference_set(
    project, researcher, annotator, django_capture_on_commit_callbacks
):
    make_clips(project, researcher, rollouts=4, queries=12, render="none")
    from labeling.models import Clip

    Clip.objects.update(render_status="ready")
    judgments = [_answer(project, annotator, choice_for_a=bool(i % 2)) for i in range(12)]
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{project.slug}/reward-models/"
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"sources": "judgments", "config": SMALL_MODEL}, format="json").status_code == 202
    first = RewardModel.objects.get(version=1)
    assert first.status == "ready", first.error
    # Training scored every judged pair for the review, once.
    assert ReviewScore.objects.filter(reward_model=first).count() == 12
    assert all(0.0 <= s.p_model <= 1.0 and s.spread >= 0.0 for s in ReviewScore.objects.all())
    assert len(list(review.review_rows(project))) == 12

    wrong = judgments[0]
    base = f"/api/v1/projects/{project.slug}/review/"
    assert client.post(f"{base}judgments/{wrong.pk}/exclude", {}, format="json").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"sources": "judgments", "config": SMALL_MODEL}, format="json").status_code == 202
    second = RewardModel.objects.get(version=2)
    assert second.status == "ready", second.error
    assert second.preference_set.counts == {"human": 11}
    table = pq.read_table(io.BytesIO(second.preference_set.file.read())).to_pylist()
    query = wrong.query
    assert not any(r["clip_a"] == query.clip_a_id and r["clip_b"] == query.clip_b_id for r in table)
    # The raw judgments export keeps it, with the mark.
    exported = client.get(f"/api/v1/projects/{project.slug}/export/judgments?format=csv")
    text = b"".join(exported.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12
    marked = [r for r in rows if r["excluded_at"]]
    assert [int(r["id"]) for r in marked] == [wrong.pk]


def test_review_page_lists_pairs_and_its_actions_answer_htmx_with_the_card(
    client, project, judged, researcher, annotator
):
    client.force_login(researcher)
    page = client.get(f"/projects/{project.slug}/review/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.index(f'id="review-{judged[3].pk}"') < html.index(f'id="review-{judged[0].pk}"')
    assert "1 pair to review" in html
    judgment = Judgment.objects.get(query=judged[3], annotator=annotator)
    url = f"/projects/{project.slug}/review/action/"
    card = client.post(
        url, {"action": "exclude", "query": judged[3].pk, "judgment": judgment.pk}, HTTP_HX_REQUEST="true"
    )
    assert card.status_code == 200 and "marked wrong" in card.content.decode()
    flagged = client.post(
        url, {"action": "flag", "query": judged[3].pk, "annotator": annotator.pk}, HTTP_HX_REQUEST="true"
    )
    assert "Unflag anna" in flagged.content.decode()
    sent = client.post(url, {"action": "send_back", "query": judged[3].pk}, HTTP_HX_REQUEST="true")
    assert "Open" in sent.content.decode()
    assert client.post(url, {"action": "explode", "query": judged[3].pk}).status_code == 400
    assert client.post(url, {"action": "exclude", "query": "x"}).status_code == 400
    overview = client.get(f"/projects/{project.slug}/").content.decode()
    quality = client.get(f"/projects/{project.slug}/quality/").content.decode()
    assert "Disagreement review" in overview and "flagged" in quality


def test_instructions_markdown_is_rendered_and_sanitised():
    from frontend.templatetags.heronry_markdown import render_markdown

    html = render_markdown(
        "# Title\n\nUse **arrows**.\n\n- one\n- two\n\n"
        '<script>alert(1)</script><img src="x" onerror="alert(2)">'
        '<a href="javascript:alert(3)" onclick="alert(4)">bad</a> [good](https://example.org)'
    )
    assert "<h1>Title</h1>" in html and "<strong>arrows</strong>" in html and html.count("<li>") == 2
    for forbidden in ("<script", "alert(1)", "<img", "onerror", "javascript:", "onclick"):
        assert forbidden not in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">good</a>' in html
