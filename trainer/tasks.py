"""Celery tasks: thin adapters that take ids, claim their work, and call the pipeline.

All tasks are safe to run twice (acks_late + reject_on_worker_lost redeliver a task whose worker died).
"""

from __future__ import annotations

from celery import shared_task

from labeling import events

from . import clip_pipeline
from .jobs import job_run


@shared_task(name=events.GENERATE_CLIPS)
def generate_clips(job_id: int) -> None:
    job_run(job_id, clip_pipeline.generate_clips)


@shared_task(name=events.RENDER_CLIP)
def render_clip(clip_id: int) -> None:
    from labeling.models import Clip

    clip = Clip.objects.select_related("project", "rollout").filter(pk=clip_id).first()
    if clip is not None:
        clip_pipeline.render_clip(clip)


@shared_task(name=events.BUILD_PREFERENCES)
def build_preferences(job_id: int) -> None:
    from .preference_building import build_preferences as work

    job_run(job_id, work)


@shared_task(name=events.TRAIN_REWARD_MODEL)
def train_reward_model(job_id: int) -> None:
    from .reward_training import train_reward_model_job

    job_run(job_id, train_reward_model_job)


# --- the loop: one task per step, chained by trainer.loop ---------------------------------------------------


_DB_RETRIES = 8  # about two minutes of backing off


# acks_late and reject_on_worker_lost are stated on each step task as well as in the settings: a step is
# acknowledged only after it finished and is handed to another worker if its worker dies, which is safe
# because every step claims its iteration before working.
def _iteration_step(task, iteration_id: int, state: str) -> None:
    from django.db import connection

    from .loop import DB_CONNECTION_ERRORS, StepInterrupted, StepOutcome, stale_after, step_run
    from .loop_steps import STEP_WORK

    try:
        outcome = step_run(iteration_id, state, STEP_WORK[state])
    except (StepInterrupted, *DB_CONNECTION_ERRORS) as error:
        # The database went away under the step, or before it could be claimed (a restart, a failover, a cut
        # connection): try again shortly, backing off. Should it stay away longer than that, the beat sweep
        # resends the step once its heartbeat is stale.
        if not connection.in_atomic_block:
            connection.close()  # Django reconnects a closed connection, never a broken one
        countdown = min(2 ** min(task.request.retries, 5), 30)
        raise task.retry(exc=error, countdown=countdown, max_retries=_DB_RETRIES) from error
    if outcome is StepOutcome.BUSY:
        # Another delivery of this step is being worked on (or its worker died and the heartbeat is not yet
        # stale): look again once it would be, rather than dropping a message that may be the only survivor.
        raise task.retry(countdown=stale_after().total_seconds(), max_retries=None)


@shared_task(name=events.ITERATION_BUILD_PREFERENCES, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_build_preferences(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.ITERATION_TRAIN_REWARD, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_train_reward(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.ITERATION_TRAIN_POLICY, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_train_policy(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.ITERATION_ROLL_OUT, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_roll_out(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.ITERATION_RENDER, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_render(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.ITERATION_PUBLISH, bind=True, acks_late=True, reject_on_worker_lost=True)
def iteration_publish(self, iteration_id: int, state: str) -> None:
    _iteration_step(self, iteration_id, state)


@shared_task(name=events.SWEEP_ITERATIONS)
def sweep_iterations() -> dict[str, int]:
    from .loop import iterations_sweep

    return iterations_sweep()
