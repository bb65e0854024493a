"""The loop through real worker processes on Redis and PostgreSQL: fault recovery and a two-iteration loop.

Needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… (CI sets them); skipped otherwise.
"""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command

from labeling.models import FeedbackMode, Query, QuerySource
from labeling.rankings import ranking_submit
from tests.conftest import make_project
from tests.integration.workers import needs_servers, start_worker, wait_for
from tests.test_loop import TINY
from tests.test_rankings_and_reward_models import RANKING, make_clips
from trainer import loop
from trainer.models import PolicyCheckpoint, Run, RunState

pytestmark = [pytest.mark.integration, needs_servers]

# Short limits so a dead worker's step is visible quickly: the heartbeat goes stale after 3 s, and Redis hands an
# unacknowledged task to another worker 4 s after delivery.
FAST_RECOVERY = {"RUN_STALE_SECONDS": "3", "CELERY_VISIBILITY_TIMEOUT": "4"}


@pytest.fixture
def real_broker(transactional_db):
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    yield app
    app.control.purge()


def _ranked_project(researcher, annotator, slug: str, **loop_settings):
    project = make_project(researcher, slug=slug, feedback_mode=FeedbackMode.RANKING)
    project.loop_settings = {**TINY, **loop_settings}
    project.save()
    from labeling.services import membership_add

    membership_add(project=project, user=annotator)
    make_clips(project, researcher, rollouts=4)  # in-process (eager) set-up
    ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas={})
    return project


def _iteration_state(iteration_id: int) -> Run:
    return Run.objects.get(pk=iteration_id)


def test_a_worker_killed_mid_step_has_its_step_redelivered_and_the_iteration_finishes(
    real_broker, settings, researcher, annotator
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    project = _ranked_project(researcher, annotator, "sigkill", policy_timesteps=4000)
    doomed = start_worker(settings.MEDIA_ROOT, **FAST_RECOVERY)
    survivor = None
    try:
        iteration = loop.iteration_create(project=project, created_by=researcher)

        def training_with_progress():
            current = _iteration_state(iteration.pk)
            assert not current.is_finished, current.error
            return current.state == RunState.TRAINING_POLICY and current.progress > 0.05

        wait_for(training_with_progress, timeout=240, what="policy training to be under way")
        doomed.kill()  # SIGKILL in the middle of the step: nothing acknowledged, nothing cleaned up
        killed_at = _iteration_state(iteration.pk)
        assert killed_at.state == RunState.TRAINING_POLICY and killed_at.attempts == 1

        time.sleep(5)  # past the visibility timeout and the stale limit
        survivor = start_worker(settings.MEDIA_ROOT, **FAST_RECOVERY)

        def finished():
            current = _iteration_state(iteration.pk)
            return current if current.is_finished else None

        done = wait_for(finished, timeout=300, what="the iteration to finish on the second worker")
        assert done.state == RunState.DONE, done.error
        # The same step ran a second time (redelivered by Redis, claimed again as its heartbeat was stale) ...
        assert done.results["training_policy"]["attempts"] == 2
        assert all(done.results[step]["attempts"] == 1 for step in ("building_preferences", "rolling_out"))
        # ... and left one result, not two.
        assert PolicyCheckpoint.objects.filter(run=done).count() == 1
        assert PolicyCheckpoint.objects.get(run=done).timesteps == 4000
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()


def test_a_two_iteration_pairwise_loop_with_simulated_annotators_on_a_real_worker(
    real_broker, settings, live_server, researcher
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    project = make_project(researcher, slug="two-turns", feedback_mode=FeedbackMode.PAIRWISE, overlap=1)
    project.loop_settings = TINY  # label budget 6 per iteration
    project.save()
    make_clips(project, researcher, rollouts=3, queries=6, render="queried")
    worker = start_worker(settings.MEDIA_ROOT)
    try:
        first = loop.iteration_create(project=project, created_by=researcher, count=2)
        assert first.state == RunState.QUEUED and first.start_after_labels == 6
        # Two annotators answer with the true-reward oracle through the REST API, and keep going while the
        # worker makes the next iteration's questions, until both budgets are spent.
        call_command(
            "simulate_annotators",
            project=project.slug,
            url=live_server.url,
            annotators=2,
            labels=12,
            wait_seconds=240,
            seed=3,
        )

        def both_done():
            iterations = list(Run.objects.filter(project=project, kind="iteration").order_by("number"))
            if len(iterations) == 2 and all(it.is_finished for it in iterations):
                return iterations
            return None

        first, second = wait_for(both_done, timeout=300, what="both iterations to finish")
        assert first.state == second.state == RunState.DONE, (first.error, second.error)
        assert (first.labels_used, second.labels_used) == (6, 12)
        assert second.previous == first
        assert PolicyCheckpoint.objects.get(run=second).timesteps == 2 * TINY["policy_timesteps"]
        for number in (1, 2):
            asked = Query.objects.filter(project=project, iteration=number)
            assert asked.count() == 6 and set(asked.values_list("source", flat=True)) == {QuerySource.ACTIVE}
    finally:
        worker.stop()
