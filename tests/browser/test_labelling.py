"""An annotator labels pairs with the keyboard in a real browser; the API exports exactly those judgments."""

from __future__ import annotations

import json

import pytest

from labeling.models import Judgment
from tests.conftest import PASSWORD, api_client_for, run_in_process
from trainer.models import RunKind

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rendered_project(project, researcher):
    run = run_in_process(project, researcher, RunKind.GENERATE_CLIPS, rollouts=3, steps=100, queries=8, seed=5)
    assert run.state == "done", run.error
    return project


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)])
def test_label_five_pairs_by_keyboard_then_export_them(
    page_for, live_server, rendered_project, annotator, researcher, viewport
):
    page = page_for(annotator, PASSWORD, width=viewport[0], height=viewport[1])
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/label/")
    page.wait_for_selector("[data-sync-player] video[data-side=left]")
    keys = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "ArrowLeft"]
    seen_queries = []
    for answered, key in enumerate(keys, start=1):
        query = page.get_attribute("#compare", "data-query-id")
        seen_queries.append(query)
        # Both choice buttons are on screen and reachable at this size.
        assert page.locator("button[data-key=ArrowLeft]").is_visible()
        assert page.locator("button[data-key=ArrowRight]").is_visible()
        page.keyboard.press(key)
        page.wait_for_function(
            "(q) => { const el = document.querySelector('#compare'); return el && el.dataset.queryId !== q; }",
            arg=query,
        )
        assert Judgment.objects.filter(annotator=annotator).count() == answered
    assert len(set(seen_queries)) == 5
    assert page.errors == []

    export = api_client_for(researcher).get(f"/api/v1/projects/{rendered_project.slug}/export/judgments?format=jsonl")
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert [r["choice"] for r in rows] == ["left", "right", "equal", "cant_tell", "left"]
    assert [str(r["query"]) for r in rows] == seen_queries


def test_shortcut_overlay_opens_with_question_mark(page_for, live_server, rendered_project, annotator):
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/label/")
    page.wait_for_selector("[data-sync-player]")
    page.keyboard.press("?")
    dialog = page.locator("[role=dialog]")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "Left is better" in text and "Space" in text
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.errors == []


def test_the_two_clips_stay_within_one_frame_during_playback_and_after_seeking(
    page_for, live_server, rendered_project, annotator
):
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/label/")
    page.wait_for_function(
        "() => { const el = document.querySelector('[data-sync-player]');"
        " const s = el && window.Heronry.player.state(el); return s && !s.paused && s.time > 0.2; }"
    )
    state = "() => window.Heronry.player.state(document.querySelector('[data-sync-player]'))"
    frame = 1 / 30
    drifts = []
    for _ in range(20):  # sampled during playback
        drifts.append(page.evaluate(state)["drift"])
        page.wait_for_timeout(50)
    assert max(drifts) < frame, drifts
    # Seek with the scrubber while playing, then paused: both clips land on the same frame.
    page.evaluate(
        "() => { const s = document.querySelector('[data-role=scrubber]'); s.value = 400;"
        " s.dispatchEvent(new Event('input', {bubbles: true}));"
        " s.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    page.wait_for_timeout(300)
    after_seek = [page.evaluate(state)["drift"] for _ in range(5)]
    assert max(after_seek) < frame, after_seek
    page.keyboard.press(" ")  # pause
    page.keyboard.press(".")  # one frame forward
    page.wait_for_timeout(300)
    paused = page.evaluate(state)
    assert paused["paused"] and paused["drift"] < frame / 2 and abs(paused["left"] - paused["right"]) < frame / 2
    assert page.errors == []


def test_answers_unlock_only_after_both_clips_were_watched_when_the_project_asks(
    page_for, live_server, rendered_project, annotator
):
    rendered_project.require_full_view = True
    rendered_project.save()
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/label/")
    left = page.locator("button[data-key=ArrowLeft]")
    assert left.is_disabled()
    page.keyboard.press("ArrowLeft")  # ignored while locked
    assert Judgment.objects.count() == 0
    page.wait_for_selector("[data-sync-player][data-watched=true]", timeout=15_000)
    assert left.is_enabled()
    query = page.get_attribute("#compare", "data-query-id")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(q) => document.querySelector('#compare').dataset.queryId !== q", arg=query)
    assert Judgment.objects.count() == 1
    assert page.errors == []
