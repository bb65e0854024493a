"""Watch the policy: one evaluation episode of each new policy, rendered to an MP4 and a poster.

The episode is played deterministically from a seed drawn from the iteration's own random stream, recorded as
actions, then re-simulated with rendering on (the same way clips are rendered: ``trainer.core.video``), so the
video shows exactly the episode whose true and learned returns are stored beside it. A failure to render is
kept on the checkpoint for the researcher and never fails the iteration: the policy itself is fine.

The loop does not wait for it: the training step queues the episode (``policy_video_queue``) and a render-queue
worker plays and renders it (``policy_video_render_queued``) while the iteration goes on, so the video is off the
loop's critical path. A lost message is re-sent by the beat's run sweep (``policy_videos_resend_stale``) or when
someone opens the policy's page (``policy_video_resend``), whichever comes first.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.core.files import File
from django.db import transaction
from django.utils import timezone
from stable_baselines3.common.base_class import BaseAlgorithm

from labeling import events
from labeling.clips import render_stale_after
from labeling.files import store_file
from labeling.services import send_task_or_warn

from .artefacts import env_factory, policy_snapshot, reward_ensemble
from .core import rollouts, video
from .core.policy import RewardFn, SB3Policy, ensemble_reward_fn, load_model
from .core.policy.reward_wrapper import features_of
from .models import PolicyCheckpoint
from .project_task import project_task

logger = logging.getLogger(__name__)

# A long episode makes a long video; the first minute or so says what the policy does.
MAX_VIDEO_STEPS = 1000


def policy_video_render(
    *, checkpoint: PolicyCheckpoint, model: BaseAlgorithm, reward_fn: RewardFn | None, seed: int
) -> dict:
    """Render one episode of ``model`` into ``checkpoint.video``/``poster``; returns (and saves) what was played."""
    project = checkpoint.project
    try:
        task = project_task(project)
        data = rollouts.run_rollout(
            project.env_id,
            policy=SB3Policy(model, name=f"policy:{checkpoint.pk}:video"),
            seed=seed,
            steps=min(task.episode_steps, MAX_VIDEO_STEPS),
            rng=np.random.default_rng(seed),  # no noise: the rng is unused, but the rollout wants one
            env_kwargs=project.env_kwargs,
            task=task,
        )
        episode: dict = {"seed": seed, "steps": len(data.actions), "true_return": float(np.sum(data.rewards))}
        if reward_fn is not None:
            n = data.discrete_actions
            steps = range(len(data.actions))
            features = np.stack([features_of(data.observations[t], data.actions[t], n) for t in steps])
            episode["learned_return"] = float(np.sum(reward_fn(features), dtype=np.float64))
        frames = video.render_segment(
            project.env_id,
            seed=seed,
            actions=data.actions,
            start=0,
            length=len(data.actions),
            width=project.render_width,
            height=project.render_height,
            env_kwargs=project.env_kwargs,
        )
        fps = project.render_fps or video.env_fps(project.env_id, project.env_kwargs)
        with tempfile.TemporaryDirectory() as folder:
            mp4, poster = Path(folder) / "policy.mp4", Path(folder) / "poster.jpg"
            video.write_mp4(frames, mp4, fps=fps)
            video.write_poster(frames[0], poster)
            name = f"{project.slug}-policy{checkpoint.pk}"
            with mp4.open("rb") as handle:
                store_file(checkpoint.video, f"{name}.mp4", File(handle))
            with poster.open("rb") as handle:
                store_file(checkpoint.poster, f"{name}.jpg", File(handle))
    except Exception as error:
        logger.exception("rendering the video of policy %s failed", checkpoint.pk)
        episode = {"seed": seed, "error": f"{type(error).__name__}: {error}"}
    checkpoint.video_episode = episode
    # An update, not save(): the checkpoint may have been deleted meanwhile (its training step was retried).
    updated = PolicyCheckpoint.objects.filter(pk=checkpoint.pk).update(
        video=checkpoint.video.name or "", poster=checkpoint.poster.name or "", video_episode=episode
    )
    if not updated:
        for field in (checkpoint.video, checkpoint.poster):
            if field.name:
                field.storage.delete(field.name)
    return episode


def policy_video_queue(*, checkpoint: PolicyCheckpoint, seed: int) -> None:
    """Mark the checkpoint's evaluation episode as to be rendered and send it to the render queue on commit."""
    checkpoint.video_episode = {"seed": seed, "queued": True, "queued_at": timezone.now().isoformat()}
    checkpoint.save(update_fields=["video_episode"])
    transaction.on_commit(lambda: _send(checkpoint.pk))


def policy_video_resend(checkpoint: PolicyCheckpoint) -> bool:
    """Send a queued video again if its render has waited longer than a render claim may (its message was lost,
    or its worker died): the render is idempotent, so a late original costs a repeat, never a wrong video."""
    episode = checkpoint.video_episode or {}
    if not episode.get("queued") or checkpoint.video:
        return False
    try:
        queued_at = datetime.fromisoformat(str(episode.get("queued_at")))
    except ValueError:
        queued_at = checkpoint.created_at
    if timezone.now() - queued_at < render_stale_after() + timedelta(seconds=30):
        return False
    PolicyCheckpoint.objects.filter(pk=checkpoint.pk).update(
        video_episode={**episode, "queued_at": timezone.now().isoformat()}
    )
    _send(checkpoint.pk)
    return True


def policy_videos_resend_stale() -> int:
    """The beat sweep's share: send again every queued video whose render is overdue (``policy_video_resend``), so a
    lost message is recovered without anyone opening the policy's page. Returns how many were sent."""
    queued = PolicyCheckpoint.objects.filter(video_episode__queued=True, video="").only(
        "pk", "video", "video_episode", "created_at"
    )
    return sum(policy_video_resend(checkpoint) for checkpoint in queued)


def _send(checkpoint_id: int) -> None:
    send_task_or_warn(
        events.RENDER_POLICY_VIDEO,
        checkpoint_id,
        recovery="the run sweep, or opening the policy's page, sends it again",
    )


def policy_video_render_queued(checkpoint_id: int) -> dict | None:
    """The render task: play and render the checkpoint's queued episode (None: gone, or rendered already)."""
    checkpoint = PolicyCheckpoint.objects.select_related("project", "reward_model").filter(pk=checkpoint_id).first()
    if checkpoint is None or not (checkpoint.video_episode or {}).get("queued"):
        return None
    try:
        make_env = env_factory(checkpoint.project)
        env = make_env()
        try:
            model = load_model(policy_snapshot(checkpoint, replay_buffer=False), env)
        finally:
            env.close()
        reward_fn = None
        if checkpoint.reward_model is not None:
            reward_fn = ensemble_reward_fn(reward_ensemble(checkpoint.reward_model), normalized=False)
    except Exception as error:
        logger.exception("loading policy %s to render its video failed", checkpoint.pk)
        episode = {"seed": checkpoint.video_episode.get("seed"), "error": f"{type(error).__name__}: {error}"}
        # An update, as in policy_video_render: the checkpoint may have been deleted meanwhile (a retried step).
        PolicyCheckpoint.objects.filter(pk=checkpoint.pk).update(video_episode=episode)
        return episode
    return policy_video_render(
        checkpoint=checkpoint, model=model, reward_fn=reward_fn, seed=int(checkpoint.video_episode["seed"])
    )
