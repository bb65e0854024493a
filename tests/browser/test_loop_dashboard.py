"""The dashboard's loop card in a real browser: progress while an iteration runs, the returns chart, controls."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from tests.conftest import PASSWORD
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, Run, RunState

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _finished_iteration(project, number: int, true_mean: float, learned_mean: float) -> Run:
    iteration = Run.objects.create(
        project=project, number=number, steps=list(ITERATION_STEPS), state=RunState.DONE, progress=0.0
    )
    policy = PolicyCheckpoint(
        project=project,
        run=iteration,
        algorithm="sac",
        timesteps=10_000 * number,
        evaluation={"true_mean": true_mean, "learned_mean": learned_mean, "true_returns": [true_mean]},
    )
    policy.model_file.save(f"i{number}.zip", ContentFile(b"PK"), save=False)
    policy.save()
    return iteration


def test_the_loop_card_charts_returns_shows_live_progress_and_pauses(page_for, live_server, project, researcher):
    _finished_iteration(project, 1, -900.0, 3.0)
    _finished_iteration(project, 2, -150.0, 12.0)
    running = Run.objects.create(
        project=project,
        number=3,
        steps=list(ITERATION_STEPS),
        state=RunState.TRAINING_POLICY,
        progress=0.25,
        message="2500/10000 steps",
    )
    page = page_for(researcher, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/loop/")
    card = page.locator("#runs")
    card.get_by_text("2500/10000 steps").wait_for()
    assert card.locator(".chart canvas").count() == 1  # uPlot drew the returns per iteration
    # True and learned return have different units: each gets its own y axis (uPlot draws one element per axis).
    assert card.locator(".chart .u-axis").count() == 3
    assert "-900" in card.inner_text() and "-150" in card.inner_text()

    # The card polls: progress reported by the worker shows up without a reload.
    Run.objects.filter(pk=running.pk).update(progress=0.75, message="7500/10000 steps")
    card.get_by_text("7500/10000 steps").wait_for(timeout=10_000)

    page.get_by_role("button", name="Pause").click()
    page.locator("#runs").get_by_text("· paused").wait_for()
    running.refresh_from_db()
    assert running.paused
    assert page.errors == []
