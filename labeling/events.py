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

from .signals import (
    export_ready,
    judgment_recorded,
    label_budget_reached,
    ranking_submitted,
    reward_model_ready,
    run_state_changed,
)

# --- queues ---------------------------------------------------------------------------------------------------

QUEUE_DEFAULT = "default"
QUEUE_RENDER = "render"  # rollouts and video: CPU-bound, many small units
QUEUE_TRAIN = "train"  # reward-model and policy training: long, maybe on a GPU

# --- Celery tasks: labeling's own -----------------------------------------------------------------------------

SWEEP_LEASES = "labeling.sweep_leases"
DELIVER_WEBHOOK = "labeling.deliver_webhook"  # one attempt of one webhook delivery (it re-sends itself on failure)
FLUSH_JUDGMENT_WEBHOOK = "labeling.flush_judgment_webhook"  # the batched "judgments recorded" delivery of one endpoint
SWEEP_WEBHOOKS = "labeling.sweep_webhooks"  # re-sends deliveries (and judgment batches) whose message was lost
BUILD_EXPORT = "labeling.build_export"  # one asynchronous export (labeling.export_jobs) written to storage
REFRESH_QUALITY_REPORT = "labeling.refresh_quality_report"  # a project's dashboard quality report, recomputed
REFRESH_LABEL_TALLIES = "labeling.refresh_label_tallies"  # a big project's label counts, counted into the cache

# --- Celery tasks: trainer's (labeling sends some of these by name) --------------------------------------------

RENDER_CLIP = "trainer.render_clip"  # one clip, on demand (a page showed it before its video was made)
RENDER_POLICY_VIDEO = "trainer.render_policy_video"  # a new policy's evaluation episode, beside the loop
# One task per step of a run (trainer.models.Run); the step's name is the run's state while it does it.
RUN_GENERATING_CLIPS = "trainer.run_generating_clips"
RUN_BUILDING_PREFERENCES = "trainer.run_building_preferences"
RUN_TRAINING_REWARD = "trainer.run_training_reward"
RUN_TRAINING_POLICY = "trainer.run_training_policy"
RUN_ROLLING_OUT = "trainer.run_rolling_out"
RUN_RENDERING = "trainer.run_rendering"
RUN_PUBLISHING = "trainer.run_publishing"
RUN_INGESTING = "trainer.run_ingesting"  # uploaded rollouts and imported datasets → clips, queries, video
REFRESH_REVIEW_SUMMARY = "trainer.refresh_review_summary"  # the disagreement review's order and counts, recomputed
SWEEP_RUNS = "trainer.sweep_runs"

# Every task and the queue it runs on (CELERY_TASK_ROUTES is built from this).
TASK_QUEUES: Mapping[str, str] = {
    SWEEP_LEASES: QUEUE_DEFAULT,
    DELIVER_WEBHOOK: QUEUE_DEFAULT,
    FLUSH_JUDGMENT_WEBHOOK: QUEUE_DEFAULT,
    SWEEP_WEBHOOKS: QUEUE_DEFAULT,
    BUILD_EXPORT: QUEUE_DEFAULT,
    REFRESH_QUALITY_REPORT: QUEUE_DEFAULT,
    REFRESH_LABEL_TALLIES: QUEUE_DEFAULT,
    RENDER_CLIP: QUEUE_RENDER,
    RENDER_POLICY_VIDEO: QUEUE_RENDER,
    RUN_GENERATING_CLIPS: QUEUE_RENDER,
    RUN_BUILDING_PREFERENCES: QUEUE_DEFAULT,
    RUN_TRAINING_REWARD: QUEUE_TRAIN,
    RUN_TRAINING_POLICY: QUEUE_TRAIN,
    RUN_ROLLING_OUT: QUEUE_RENDER,
    RUN_RENDERING: QUEUE_RENDER,
    RUN_PUBLISHING: QUEUE_DEFAULT,
    RUN_INGESTING: QUEUE_RENDER,
    REFRESH_REVIEW_SUMMARY: QUEUE_DEFAULT,
    SWEEP_RUNS: QUEUE_DEFAULT,
}
TASKS: tuple[str, ...] = tuple(TASK_QUEUES)

# The task of each run step, by the step's name (trainer.models.RunState values).
STEP_TASKS: Mapping[str, str] = {
    "generating_clips": RUN_GENERATING_CLIPS,
    "building_preferences": RUN_BUILDING_PREFERENCES,
    "training_reward": RUN_TRAINING_REWARD,
    "training_policy": RUN_TRAINING_POLICY,
    "rolling_out": RUN_ROLLING_OUT,
    "rendering": RUN_RENDERING,
    "publishing": RUN_PUBLISHING,
    "ingesting": RUN_INGESTING,
}

# Periodic tasks (CELERY_BEAT_SCHEDULE): entry name → (task, seconds between runs).
BEAT: Mapping[str, tuple[str, float]] = {
    "sweep-expired-leases": (SWEEP_LEASES, 60.0),
    "sweep-runs": (SWEEP_RUNS, 60.0),
    "sweep-webhooks": (SWEEP_WEBHOOKS, 300.0),
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
    "labeling.run_state_changed": run_state_changed,
    "labeling.reward_model_ready": reward_model_ready,
    "labeling.label_budget_reached": label_budget_reached,
    "labeling.export_ready": export_ready,
}


# --- webhook event types (the "type" of a delivery's payload; endpoints subscribe to these) --------------------

WEBHOOK_JUDGMENTS_RECORDED = "judgments.recorded"  # batched: count and id range, at most one per endpoint per N s
WEBHOOK_RANKING_SUBMITTED = "ranking.submitted"
WEBHOOK_LABEL_BUDGET_REACHED = "label_budget.reached"
WEBHOOK_REWARD_MODEL_READY = "reward_model.ready"
WEBHOOK_RUN_STATE_CHANGED = "run.state_changed"
WEBHOOK_EXPORT_READY = "export.ready"

WEBHOOK_EVENTS: Mapping[str, str] = {
    WEBHOOK_JUDGMENTS_RECORDED: "Pairwise judgments recorded (batched: their count and id range)",
    WEBHOOK_RANKING_SUBMITTED: "A factor ranking was submitted",
    WEBHOOK_LABEL_BUDGET_REACHED: "A run waiting for its label budget has it and may start",
    WEBHOOK_REWARD_MODEL_READY: "A reward model finished training",
    WEBHOOK_RUN_STATE_CHANGED: "A run (an iteration, a retrain, a clip generation, ...) changed state",
    WEBHOOK_EXPORT_READY: "An export is ready to be fetched",
}
"""Every webhook event type with its description."""
