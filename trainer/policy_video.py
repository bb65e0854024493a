"""Watch the policy: one evaluation episode of each new policy, rendered to an MP4 and a poster.

The episode is played deterministically from a seed drawn from the iteration's own random stream, recorded as
actions, then re-simulated with rendering on (the same way clips are rendered: ``trainer.core.video``), so the
video shows exactly the episode whose true and learned returns are stored beside it. A failure to render is
kept on the checkpoint for the researcher and never fails the iteration: the policy itself is fine.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from django.core.files import File
from stable_baselines3.common.base_class import BaseAlgorithm

from labeling.files import store_file

from .core import rollouts, video
from .core.policy import RewardFn, SB3Policy
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
    checkpoint.save(update_fields=["video", "poster", "video_episode"])
    return episode
