"""The names of everything that crosses an app boundary at run time, in one place.

labeling never imports trainer: it sends trainer's Celery tasks *by name* and announces events through signals that
trainer connects to. Those names are a contract, so they live here and nowhere else: the tasks' ``name=``, the
senders (``labeling.services.send_task_by_name``), the routes and the beat schedule in ``config.settings`` all use
these constants, and ``tests/test_events.py`` checks that each names a registered task on its intended queue and
that each signal has a receiver.

This module imports nothing of Django's models (``config.settings`` imports it before the apps are loaded).
"""

from __future__ import annotations

from collections.abc import Mapping

from .signals import judgment_recorded, ranking_submitted

# --- queues ---------------------------------------------------------------------------------------------------

QUEUE_DEFAULT = "default"
QUEUE_RENDER = "render"  # rollouts and video: CPU-bound, many small units
QUEUE_TRAIN = "train"  # reward-model and policy training: long, maybe on a GPU

# --- Celery tasks: labeling's own -----------------------------------------------------------------------------

SWEEP_LEASES = "labeling.sweep_leases"

# --- Celery tasks: trainer's (labeling sends some of these by name) --------------------------------------------

GENERATE_CLIPS = "trainer.generate_clips"
RENDER_CLIP = "trainer.render_clip"
BUILD_PREFERENCES = "trainer.build_preferences"
TRAIN_REWARD_MODEL = "trainer.train_reward_model"
ITERATION_BUILD_PREFERENCES = "trainer.iteration_build_preferences"
ITERATION_TRAIN_REWARD = "trainer.iteration_train_reward"
ITERATION_TRAIN_POLICY = "trainer.iteration_train_policy"
ITERATION_ROLL_OUT = "trainer.iteration_roll_out"
ITERATION_RENDER = "trainer.iteration_render"
ITERATION_PUBLISH = "trainer.iteration_publish"
SWEEP_ITERATIONS = "trainer.sweep_iterations"

# Every task and the queue it runs on (CELERY_TASK_ROUTES is built from this).
TASK_QUEUES: Mapping[str, str] = {
    SWEEP_LEASES: QUEUE_DEFAULT,
    GENERATE_CLIPS: QUEUE_RENDER,
    RENDER_CLIP: QUEUE_RENDER,
    BUILD_PREFERENCES: QUEUE_DEFAULT,
    TRAIN_REWARD_MODEL: QUEUE_TRAIN,
    ITERATION_BUILD_PREFERENCES: QUEUE_DEFAULT,
    ITERATION_TRAIN_REWARD: QUEUE_TRAIN,
    ITERATION_TRAIN_POLICY: QUEUE_TRAIN,
    ITERATION_ROLL_OUT: QUEUE_RENDER,
    ITERATION_RENDER: QUEUE_RENDER,
    ITERATION_PUBLISH: QUEUE_DEFAULT,
    SWEEP_ITERATIONS: QUEUE_DEFAULT,
}
TASKS: tuple[str, ...] = tuple(TASK_QUEUES)

# The task that runs a labeling Job, by the job's kind (labeling.models.JobKind values).
JOB_TASKS: Mapping[str, str] = {
    "generate_clips": GENERATE_CLIPS,
    "build_preferences": BUILD_PREFERENCES,
    "train_reward_model": TRAIN_REWARD_MODEL,
}

# Periodic tasks (CELERY_BEAT_SCHEDULE): entry name → (task, seconds between runs).
BEAT: Mapping[str, tuple[str, float]] = {
    "sweep-expired-leases": (SWEEP_LEASES, 60.0),
    "sweep-iterations": (SWEEP_ITERATIONS, 60.0),
}


def celery_routes() -> dict[str, dict[str, str]]:
    """``CELERY_TASK_ROUTES``: every task that does not run on the default queue, by name."""
    return {name: {"queue": queue} for name, queue in TASK_QUEUES.items() if queue != QUEUE_DEFAULT}


def celery_beat_schedule() -> dict[str, dict[str, object]]:
    """``CELERY_BEAT_SCHEDULE``."""
    return {entry: {"task": task, "schedule": seconds} for entry, (task, seconds) in BEAT.items()}


# --- signals (defined in labeling.signals, sent after commit; trainer.apps connects the receivers) ------------

SIGNALS = {
    "labeling.ranking_submitted": ranking_submitted,
    "labeling.judgment_recorded": judgment_recorded,
}
