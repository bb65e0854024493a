"""The factor-ranking board in a real browser: keyboard only, drag and drop, and a phone-sized screen."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from labeling.models import FactorRanking
from tests.conftest import PASSWORD, add_fake_clips

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEFAULT = [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]
EXPECTED = [["torque_sq"], ["angle_sq", "angular_velocity_sq"]]


def screenshot(page, name):
    """Save a full-page screenshot when HERONRY_SCREENSHOTS names a folder (for looking at the layout)."""
    folder = os.environ.get("HERONRY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def canonical(groups):
    """Levels in order; the order inside a tie group does not matter."""
    return [sorted(group) for group in groups]


def open_board(page_for, live_server, project, user, **size):
    page = page_for(user, PASSWORD, **size)
    page.goto(f"{live_server.url}/projects/{project.slug}/rank/")
    page.wait_for_selector("#ranking-form .rank-level-head")  # ranking.js has initialised the board
    return page


def board_state(page):
    """The board as ranking.js reads it, checked against the hidden field that is posted."""
    state = page.evaluate("Heronry.ranking.state(document.querySelector('#ranking-form'))")
    assert json.loads(page.input_value("#ranking-form input[name=groups]")) == state
    return state


def focused_key(page):
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('data-factor-key')")


def announced(page):
    return page.text_content("#ranking-form [aria-live=polite]").strip()


def latest_ranking(user):
    return FactorRanking.objects.filter(annotator=user).latest("created_at")


def center(box, *, x_limit=80):
    return box["x"] + min(box["width"] / 2, x_limit), box["y"] + box["height"] / 2


def drag(page, card, target):
    """Press on a card, move the pointer onto target in small steps (re-aiming as the board moves) and release.

    Sortable runs in fallback mode, so it follows real pointer events, which page.mouse produces.
    """
    card.scroll_into_view_if_needed()
    x, y = center(card.locator(".rank-factor-head").bounding_box(), x_limit=60)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 6, y + 6, steps=4)
    page.mouse.move(x + 14, y + 14, steps=4)
    page.wait_for_selector("#ranking-form.is-dragging")  # the drop zones between levels are open now
    for steps in (20, 6, 3):  # the board shifts while the placeholder travels: aim again at the target
        target.scroll_into_view_if_needed()
        tx, ty = center(target.bounding_box())
        page.mouse.move(tx, ty, steps=steps)
        page.wait_for_timeout(150)
    page.mouse.up()
    # Locator waits, not wait_for_function: a string predicate is evaluated with eval, which the CSP refuses.
    expect(page.locator("#ranking-form.is-dragging")).to_have_count(0)
    expect(page.locator("#ranking-form .rank-gap .rank-factor")).to_have_count(0)


def test_rank_by_keyboard_only_and_submit_with_ctrl_enter(page_for, live_server, project, annotator):
    page = open_board(page_for, live_server, project, annotator)
    assert board_state(page) == DEFAULT
    assert page.locator("#ranking-form [aria-live=polite]").count() == 1
    heads = page.locator("#ranking-form .rank-level-head").all_inner_texts()
    assert len(heads) == 3 and "most important" in heads[0] and "least important" in heads[2]

    # Tab from the top of the page to the first factor card.
    for _ in range(30):
        page.keyboard.press("Tab")
        if focused_key(page):
            break
    assert focused_key(page) == "angle_sq"

    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused_key(page) == "torque_sq"
    page.keyboard.press("Alt+ArrowUp")
    assert board_state(page) == [["angle_sq"], ["torque_sq"], ["angular_velocity_sq"]]
    assert announced(page) == "Torque² moved to level 2 of 3"
    page.keyboard.press("Alt+ArrowUp")
    assert board_state(page) == [["torque_sq"], ["angle_sq"], ["angular_velocity_sq"]]
    assert announced(page) == "Torque² moved to level 1 of 3"
    assert focused_key(page) == "torque_sq"  # focus stays on the moved card

    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused_key(page) == "angular_velocity_sq"
    page.keyboard.press("t")  # tie with the level above
    assert canonical(board_state(page)) == EXPECTED
    assert announced(page) == "Angular velocity² now tied with Angle² at level 2 of 2"
    assert focused_key(page) == "angular_velocity_sq"
    heads = page.locator("#ranking-form .rank-level-head").all_inner_texts()
    assert len(heads) == 2 and "most important" in heads[0] and "tie" in heads[1]
    screenshot(page, "ranking-keyboard-1280")

    # The previous field in tab order is angle's σ: arrows there change the number, not the ranking.
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.name") == "sigma_angle_sq"
    page.keyboard.press("ArrowUp")
    assert canonical(board_state(page)) == EXPECTED
    page.keyboard.press("Control+a")
    page.keyboard.type("0.5")
    assert page.input_value("input[name=sigma_angle_sq]") == "0.5"

    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    page.wait_for_selector(".messages .success")

    ranking = latest_ranking(annotator)
    assert ranking.project == project
    assert canonical(ranking.groups) == EXPECTED
    assert ranking.sigmas.get("angle_sq") == 0.5
    assert FactorRanking.objects.filter(annotator=annotator).count() == 1

    # The page comes back showing the ranking just saved.
    page.wait_for_selector("#ranking-form .rank-level-head")
    assert canonical(board_state(page)) == EXPECTED
    assert float(page.input_value("input[name=sigma_angle_sq]")) == 0.5
    assert page.errors == []


def test_more_keys_untie_swap_and_edges(page_for, live_server, project, annotator):
    page = open_board(page_for, live_server, project, annotator)
    page.locator("[data-factor-key=angle_sq]").focus()
    page.keyboard.press("k")  # already at the top: nothing moves, and it says so
    assert board_state(page) == DEFAULT
    assert "already at level 1" in announced(page)
    page.keyboard.press("j")  # a lone factor swaps levels with its neighbour
    assert board_state(page) == [["angular_velocity_sq"], ["angle_sq"], ["torque_sq"]]
    page.keyboard.press("Shift+ArrowDown")
    assert board_state(page) == [["angular_velocity_sq"], ["torque_sq"], ["angle_sq"]]
    page.keyboard.press("=")  # "=" ties like "t"
    assert board_state(page) == [["angular_velocity_sq"], ["torque_sq", "angle_sq"]]
    page.keyboard.press("Alt+ArrowUp")  # a tied factor leaves its group for a new level just above it
    assert board_state(page) == [["angular_velocity_sq"], ["angle_sq"], ["torque_sq"]]
    page.keyboard.press("t")
    assert board_state(page) == [["angular_velocity_sq", "angle_sq"], ["torque_sq"]]
    assert announced(page) == "Angle² now tied with Angular velocity² at level 1 of 2"
    page.keyboard.press("t")  # nothing above level 1
    assert board_state(page) == [["angular_velocity_sq", "angle_sq"], ["torque_sq"]]
    assert "no level above" in announced(page)
    page.keyboard.press("u")  # untie: its own level directly below the group
    assert board_state(page) == [["angular_velocity_sq"], ["angle_sq"], ["torque_sq"]]
    assert announced(page) == "Angle² untied, now alone at level 2 of 3"
    page.keyboard.press("u")
    assert "not tied" in announced(page)
    assert focused_key(page) == "angle_sq"
    page.keyboard.press("End")
    assert focused_key(page) == "torque_sq"
    page.keyboard.press("Home")
    assert focused_key(page) == "angular_velocity_sq"
    # The ranking keys never reach keys.js, and an unhandled key does not submit anything.
    page.keyboard.press("Enter")
    assert FactorRanking.objects.filter(annotator=annotator).count() == 0
    # The small buttons on each card do the same moves (for touch and switch users).
    page.locator("[data-factor-key=torque_sq] [data-rank-action=tie]").click()
    assert board_state(page) == [["angular_velocity_sq"], ["angle_sq", "torque_sq"]]
    assert focused_key(page) == "torque_sq"
    assert page.locator("#ranking-form .rank-gap").count() == 3  # before, between and after the levels
    assert page.errors == []


def test_rank_by_drag_and_drop(page_for, live_server, project, annotator):
    page = open_board(page_for, live_server, project, annotator)
    assert board_state(page) == DEFAULT
    # The preset's fractional σ (issue 13) is a valid value of the field: the form below must still submit.
    assert page.input_value("input[name=sigma_angle_sq]") == "0.25"

    top_gap = page.locator("#ranking-form .rank-gap-list").first
    drag(page, page.locator("[data-factor-key=torque_sq]"), top_gap)
    assert board_state(page) == [["torque_sq"], ["angle_sq"], ["angular_velocity_sq"]]
    assert announced(page) == "Torque² moved to level 1 of 3"

    angle_level = page.locator("#ranking-form .rank-level:has([data-factor-key=angle_sq]) .rank-factors")
    drag(page, page.locator("[data-factor-key=angular_velocity_sq]"), angle_level)
    assert canonical(board_state(page)) == EXPECTED
    assert page.locator("#ranking-form .rank-level").count() == 2  # the emptied level is gone
    assert page.locator("#ranking-form .rank-gap").count() == 3

    with page.expect_navigation():
        page.get_by_role("button", name="Submit ranking").click()
    page.wait_for_selector(".messages .success")
    assert canonical(latest_ranking(annotator).groups) == EXPECTED
    assert page.errors == []


def test_board_is_usable_on_a_phone(page_for, live_server, project, annotator):
    add_fake_clips(project, 4)  # example clips make the cards as tall as they get
    page = open_board(page_for, live_server, project, annotator, width=390, height=844)
    screenshot(page, "ranking-phone-390-start")

    def no_horizontal_overflow():
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

    no_horizontal_overflow()
    cards = page.locator("#ranking-form .rank-factor")
    assert cards.count() == 3
    for i in range(cards.count()):
        card = cards.nth(i)
        card.scroll_into_view_if_needed()
        assert card.is_visible()
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        sigma = card.locator("input[type=number]")
        sigma.scroll_into_view_if_needed()
        assert sigma.is_visible()
    submit = page.get_by_role("button", name="Submit ranking")
    submit.scroll_into_view_if_needed()
    assert submit.is_visible()

    # Moving factors about keeps the layout within the screen.
    cards.nth(2).focus()
    page.keyboard.press("Alt+ArrowUp")
    page.keyboard.press("t")
    assert board_state(page) == [["angle_sq", "torque_sq"], ["angular_velocity_sq"]]
    no_horizontal_overflow()
    screenshot(page, "ranking-phone-390")
    assert page.errors == []


def test_rank_a_data_only_project_with_factor_values_instead_of_videos(page_for, live_server, project, annotator):
    """Clips without video (uploaded or imported data only): the board shows each factor's spread, and ranks."""
    from labeling.models import Clip, RenderStatus

    add_fake_clips(project, 4, ready=False)
    Clip.objects.filter(project=project).update(render_status=RenderStatus.NO_VIDEO)
    page = open_board(page_for, live_server, project, annotator)
    stats = page.locator("[data-factor-stats]")
    assert stats.count() == 3
    assert "Over 4 clips" in stats.first.inner_text() and "median" in stats.first.inner_text()
    assert page.locator(".clip-data-only").count() > 0 and page.locator("video").count() == 0
    screenshot(page, "rank-data-only")
    page.locator("[data-factor-key=torque_sq]").focus()
    page.keyboard.press("Alt+ArrowUp")
    page.keyboard.press("Alt+ArrowUp")
    assert board_state(page) == [["torque_sq"], ["angle_sq"], ["angular_velocity_sq"]]
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    page.wait_for_selector(".messages .success")
    assert latest_ranking(annotator).groups == [["torque_sq"], ["angle_sq"], ["angular_velocity_sq"]]
