"""A two-iteration loop on a spec'd discrete task (CartPole-v1, PPO) through a real worker process on Redis and
PostgreSQL. Needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://…; skipped otherwise."""

from __future__ import annotations

import pytest

from labeling.models import Clip
from tests.integration.workers import needs_servers, start_worker, wait_for
from tests.test_loop_anyenv import TINY_LOOP, TINY_PPO, spec_project
from trainer import loop
from trainer.models import PolicyCheckpoint, Run, RunState

pytestmark = [pytest.mark.integration, needs_servers]


@pytest.fixture
def real_broker(transactional_db):
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    yield app
    app.control.purge()


def test_two_iterations_on_cartpole_through_a_worker(real_broker, settings, researcher, annotator):
    project = spec_project(  # set up in-process (eager)
        "cartpole.yaml",
        researcher,
        annotator,
        episode_steps=40,
        clip_length=10,
        loop_settings={**TINY_LOOP, "policy": TINY_PPO, "policy_timesteps": 32},
    )
    settings.CELERY_TASK_ALWAYS_EAGER = False
    worker = start_worker(settings.MEDIA_ROOT)
    try:
        loop.iteration_create(project=project, created_by=researcher, count=2)

        def both_done():
            iterations = list(Run.objects.filter(project=project, kind="iteration").order_by("number"))
            if len(iterations) == 2 and all(it.is_finished for it in iterations):
                return iterations
            return None

        first, second = wait_for(both_done, timeout=300, what="both iterations to finish")
        assert first.state == second.state == RunState.DONE, (first.error, second.error)
        checkpoint = PolicyCheckpoint.objects.get(run=second)
        assert checkpoint.algorithm == "ppo" and checkpoint.timesteps == 64
        assert Clip.objects.filter(project=project, iteration=2).exists()
    finally:
        worker.stop()
