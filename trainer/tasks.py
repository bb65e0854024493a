"""Celery tasks: thin adapters that take ids, claim their work, and call the pipeline.

All tasks are safe to run twice (acks_late + reject_on_worker_lost redeliver a task whose worker died).
"""

from __future__ import annotations

from celery import shared_task

from . import clip_pipeline
from .jobs import job_run


@shared_task(name="trainer.generate_clips")
def generate_clips(job_id: int) -> None:
    job_run(job_id, clip_pipeline.generate_clips)


@shared_task(name="trainer.render_clip")
def render_clip(clip_id: int) -> None:
    from labeling.models import Clip

    clip = Clip.objects.select_related("project", "rollout").filter(pk=clip_id).first()
    if clip is not None:
        clip_pipeline.render_clip(clip)


@shared_task(name="trainer.build_preferences")
def build_preferences(job_id: int) -> None:
    from .preference_building import build_preferences as work

    job_run(job_id, work)


@shared_task(name="trainer.train_reward_model")
def train_reward_model(job_id: int) -> None:
    from .reward_training import train_reward_model_job

    job_run(job_id, train_reward_model_job)
