"""A two-iteration loop on spec'd tasks of each simulator family — classic control with discrete actions
(CartPole-v1, PPO) and MuJoCo (Hopper-v5, SAC) — through a real worker process on Redis and PostgreSQL.
Needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://…; skipped otherwise."""

from __future__ import annotations

import pytest

from labeling.models import Clip
from tests.integration.workers import needs_servers, start_worker, wait_for
from tests.test_loop_anyenv import TINY_LOOP, TINY_PPO, TINY_SAC, spec_project
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


@pytest.mark.parametrize(
    ("spec", "episode_steps", "clip_length", "policy", "algorithm", "timesteps"),
    [
        ("cartpole.yaml", 40, 10, TINY_PPO, "ppo", 32),
        ("hopper.yaml", 40, 20, TINY_SAC, "sac", 40),
    ],
    ids=["cartpole-ppo", "hopper-sac"],
)
def test_two_iterations_through_a_worker(
    real_broker, settings, researcher, annotator, spec, episode_steps, clip_length, policy, algorithm, timesteps
):
    project = spec_project(  # set up in-process (eager)
        spec,
        researcher,
        annotator,
        episode_steps=episode_steps,
        clip_length=clip_length,
        loop_settings={**TINY_LOOP, "policy": policy, "policy_timesteps": timesteps},
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
        assert checkpoint.algorithm == algorithm and checkpoint.timesteps == 2 * timesteps
        assert Clip.objects.filter(project=project, iteration=2).exists()
    finally:
        worker.stop()
