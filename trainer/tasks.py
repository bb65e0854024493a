"""Celery tasks: thin adapters that take ids, claim their work, and call the pipeline.

All tasks are safe to run twice (acks_late + reject_on_worker_lost redeliver a task whose worker died).
"""

from __future__ import annotations

from celery import shared_task

from labeling import events

from . import clip_pipeline


@shared_task(name=events.RENDER_CLIP)
def render_clip(clip_id: int) -> None:
    from labeling.models import Clip

    clip = Clip.objects.select_related("project", "rollout").filter(pk=clip_id).first()
    if clip is not None:
        clip_pipeline.render_clip(clip)


@shared_task(name=events.RENDER_POLICY_VIDEO)
def render_policy_video(checkpoint_id: int) -> None:
    from .policy_video import policy_video_render_queued

    policy_video_render_queued(checkpoint_id)


@shared_task(name=events.REFRESH_REVIEW_SUMMARY)
def refresh_review_summary(project_id: int) -> None:
    """Recompute a project's disagreement-review order and counts into the cache (pages show the last meanwhile)."""
    from . import review

    review.review_summary_refresh(project_id)


# --- runs: one task per step, chained by trainer.loop ---------------------------------------------------------


_DB_RETRIES = 8  # about two minutes of backing off


# acks_late and reject_on_worker_lost are stated on each step task as well as in the settings: a step is
# acknowledged only after it finished and is handed to another worker if its worker dies, which is safe
# because every step claims its run before working.
def _run_step(task, run_id: int, state: str) -> None:
    from django.db import connection

    from .loop import DB_CONNECTION_ERRORS, StepInterrupted, StepOutcome, stale_after, step_run
    from .loop_steps import STEP_WORK

    try:
        outcome = step_run(run_id, state, STEP_WORK[state])
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


def _step_task(name: str):
    @shared_task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_step(self, run_id: int, state: str) -> None:
        _run_step(self, run_id, state)

    return run_step


# One task per step (each on its own queue: labeling.events.TASK_QUEUES), so workers can specialise.
STEP_TASKS = {state: _step_task(name) for state, name in events.STEP_TASKS.items()}


@shared_task(name=events.SWEEP_RUNS)
def sweep_runs() -> dict[str, int]:
    from .loop import runs_sweep
    from .policy_video import policy_videos_resend_stale

    return {**runs_sweep(), "videos_resent": policy_videos_resend_stale()}
