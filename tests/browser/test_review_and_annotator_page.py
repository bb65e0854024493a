"""Issue 14 (4, 5) in a real browser: the disagreement review's actions, and the annotator's page at 1366×768
(answer buttons on screen, Markdown instructions folded after the first answer, batch progress), keyboard play
in the history, and the ranking page's `?` overlay and distinct examples."""

from __future__ import annotations

import uuid

import pytest

from labeling import assignment
from labeling.models import Judgment, Membership, Query
from tests.browser.test_ranking import screenshot
from tests.conftest import PASSWORD, add_fake_clips, run_in_process
from trainer.models import PreferenceSet, ReviewScore, RewardModel, RewardModelStatus, RunKind

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

INSTRUCTIONS = """# Keep the pendulum up

Prefer the clip where the pendulum **stays upright** longer.
When both do, prefer the one that uses *less torque*.

- Ignore the colours.
- "Can't tell" is a fine answer when the clips look the same.

<script>window.__injected = true</script>
"""


@pytest.fixture
def rendered_project(project, researcher):
    project.instructions = INSTRUCTIONS
    project.save(update_fields=["instructions"])
    run = run_in_process(project, researcher, RunKind.GENERATE_CLIPS, rollouts=3, steps=100, queries=8, seed=5)
    assert run.state == "done", run.error
    return project


def answer(project, annotator, *, a_better: bool = True) -> Judgment:
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    choice = "left" if a_better != lease.swapped else "right"
    return assignment.judgment_submit(
        query_id=lease.query_id, annotator=annotator, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment


def inside_viewport(page, selector, width, height):
    boxes = [page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())]
    assert boxes, selector
    for box in boxes:
        assert box is not None
        assert box["x"] >= 0 and box["y"] >= 0, box
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (box, width, height)


def test_label_page_at_1366x768_keeps_the_answers_on_screen_and_folds_the_markdown_instructions(
    page_for, live_server, rendered_project, annotator
):
    width, height = 1366, 768
    page = page_for(annotator, PASSWORD, width=width, height=height)
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/label/")
    page.wait_for_selector("[data-sync-player-ready]")

    # Markdown, sanitised: a heading, emphasis and a list; no literal asterisks; the script is dropped.
    instructions = page.locator("details[data-instructions]")
    assert instructions.evaluate("d => d.open")
    prose = instructions.locator(".prose")
    assert prose.locator("h1").inner_text() == "Keep the pendulum up"
    assert prose.locator("strong").inner_text() == "stays upright"
    assert prose.locator("li").count() == 2
    assert "**" not in prose.inner_text() and prose.locator("script").count() == 0
    assert page.evaluate("window.__injected === undefined")

    assert "0 of 8 answered in this batch · 8 remaining" in page.inner_text("[data-role=progress]")
    # Instructions open: every answer button is inside the 1366×768 viewport without scrolling.
    assert page.evaluate("window.scrollY") == 0
    inside_viewport(page, "form[data-judgment-form] button[name=choice]", width, height)
    screenshot(page, "label-1366x768-instructions-open")

    query = page.get_attribute("#compare", "data-query-id")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(q) => document.querySelector('#compare').dataset.queryId !== q", arg=query)
    # The first answer folds the instructions away; the progress counts it.
    assert not instructions.evaluate("d => d.open")
    assert "1 of 8 answered in this batch · 7 remaining" in page.inner_text("[data-role=progress]")
    inside_viewport(page, "form[data-judgment-form] button[name=choice]", width, height)

    # They stay folded on the next visit, and open again on request (the I key), answers still on screen.
    page.reload()
    page.wait_for_selector("[data-sync-player-ready]")
    assert not page.locator("details[data-instructions]").evaluate("d => d.open")
    screenshot(page, "label-1366x768-instructions-folded")
    page.keyboard.press("i")
    assert page.locator("details[data-instructions]").evaluate("d => d.open")
    inside_viewport(page, "form[data-judgment-form] button[name=choice]", width, height)
    assert page.errors == []


def test_history_clips_play_and_pause_by_keyboard(page_for, live_server, project_with_queries, annotator):
    answer(project_with_queries, annotator)
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project_with_queries.slug}/history/")
    # The fake clips are not real MP4s: play() and pause() are recorded (and keep `paused` honest) instead.
    page.evaluate(
        """() => {
        window.__calls = [];
        Object.defineProperty(HTMLMediaElement.prototype, 'paused', {
            configurable: true, get() { return !this.__playing; } });
        HTMLMediaElement.prototype.play = function () {
            this.__playing = true; window.__calls.push('play'); this.dispatchEvent(new Event('play'));
            return Promise.resolve(); };
        HTMLMediaElement.prototype.pause = function () {
            this.__playing = false; window.__calls.push('pause'); this.dispatchEvent(new Event('pause')); };
    }"""
    )
    page.keyboard.press("Tab")
    for _ in range(20):  # tab to the first clip, as a keyboard user would
        if page.evaluate("document.activeElement.matches('video[data-toggle-play]')"):
            break
        page.keyboard.press("Tab")
    video = page.locator("video[data-toggle-play]").first
    assert page.evaluate("document.activeElement === document.querySelector('video[data-toggle-play]')")
    assert video.get_attribute("aria-label").startswith("Play the left clip")
    page.keyboard.press("Enter")
    assert page.evaluate("window.__calls") == ["play"]
    assert video.get_attribute("aria-pressed") == "true"
    page.keyboard.press(" ")
    assert page.evaluate("window.__calls") == ["play", "pause"]
    assert video.get_attribute("aria-pressed") == "false"
    assert page.evaluate("window.scrollY") == 0  # Space toggled the clip, it did not scroll the page
    assert page.errors == []


def test_ranking_page_lists_every_key_says_sigma_once_and_shows_distinct_examples(
    page_for, live_server, project, annotator
):
    add_fake_clips(project, 6)  # two factors are constant: the old examples were the same clip everywhere
    page = page_for(annotator, PASSWORD, width=1366, height=768)
    page.goto(f"{live_server.url}/projects/{project.slug}/rank/")
    page.wait_for_selector("#ranking-form .rank-level-head")

    sources = page.eval_on_selector_all(".factor-examples video", "vs => vs.map(v => v.getAttribute('src'))")
    assert len(sources) == 6 and len(set(sources)) == 6
    assert page.locator(".factor-sigma-help").count() == 1
    for sigma in page.locator("input[name^=sigma_]").all():
        assert "sigma-help" in sigma.get_attribute("aria-describedby")
    # Compact: a level of one factor gives its card the row (it used to take a third of it).
    card = page.locator(".rank-factor").first.bounding_box()
    level = page.locator(".rank-level").first.bounding_box()
    assert card["width"] > 0.6 * level["width"]
    screenshot(page, "rank-1366x768")

    page.keyboard.press("?")
    dialog = page.locator("[role=dialog]")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    for words in (
        "Previous / next factor",
        "First / last factor",
        "Move the factor up a level",
        "Move the factor down a level",
        "Tie the factor with the level above",
        "Untie the factor",
        "Submit ranking",
        "Ctrl+Enter",
        "Alt+↑",
        "Home / End",
    ):
        assert words in text, words
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.errors == []


def test_review_page_marks_wrong_flags_and_sends_back(
    page_for, live_server, rendered_project, researcher, annotator, annotator2
):
    # Both annotators say clip A is better on every pair; a (stand-in) ready model is sure B is.
    for _ in range(8):
        answer(rendered_project, annotator)
        answer(rendered_project, annotator2)
    preference_set = PreferenceSet.objects.create(project=rendered_project, sources="judgments", checksum="0" * 64)
    model = RewardModel.objects.create(
        project=rendered_project, version=1, preference_set=preference_set, status=RewardModelStatus.READY
    )
    queries = list(Query.objects.filter(project=rendered_project, judgments__isnull=False).distinct().order_by("id"))
    for i, query in enumerate(queries):
        ReviewScore.objects.create(reward_model=model, query=query, p_model=0.05 + 0.1 * i, spread=0.01)
    top = queries[0]

    page = page_for(researcher, PASSWORD, width=1366, height=900)
    page.goto(f"{live_server.url}/projects/{rendered_project.slug}/")
    assert "to review" in page.inner_text(".review-count")
    page.click(".review-count a")
    page.wait_for_selector("[data-sync-player-ready]")
    first = page.locator("article.review-row").first
    assert first.get_attribute("data-review-query") == str(top.pk)
    assert first.locator("video").count() == 2
    assert "anna" in first.inner_text() and "ben" in first.inner_text() and "A better" in first.inner_text()
    screenshot(page, "review-1366x900")

    card = f"#review-{top.pk}"
    page.locator(card).locator("tr", has_text="anna").get_by_role("button", name="Mark wrong").click()
    page.wait_for_selector(f"{card} .badge-fail:text('marked wrong')")
    assert Judgment.objects.get(query=top, annotator=annotator).excluded_at is not None

    page.locator(card).get_by_role("button", name="Flag ben").click()
    page.wait_for_selector(f"{card} button:text('Unflag ben')")
    assert Membership.objects.get(project=rendered_project, user=annotator2).flagged_at is not None

    page.locator(card).get_by_role("button", name="Send back for one more answer").click()
    page.wait_for_selector(f"{card} dd:text('Open')")
    top.refresh_from_db()
    assert top.status == "open" and top.answers_wanted == top.answers_given + 1
    screenshot(page, "review-after-actions")
    assert page.errors == []
