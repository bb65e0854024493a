"""Stored artefacts read back for work: a policy checkpoint as a snapshot, a reward model as its ensemble, and a
project's environment factory. Shared by the loop's steps and the render queue's policy videos."""

from __future__ import annotations

import gymnasium

from labeling.models import Project

from .core import envs
from .core.policy import PolicySnapshot
from .core.policy.training import EnvFactory
from .core.reward import RewardEnsemble, from_bytes
from .models import PolicyCheckpoint, RewardModel
from .project_task import project_task


def reward_ensemble(reward_model: RewardModel) -> RewardEnsemble:
    with reward_model.weights.open("rb") as weights, reward_model.metadata.open("rb") as metadata:
        return from_bytes(weights.read(), metadata.read().decode()).model


def env_factory(project: Project) -> EnvFactory:
    task = project_task(project)  # read once: a bad task fails the caller now, not inside the policy's training
    kwargs = dict(project.env_kwargs)

    def make() -> gymnasium.Env:
        return envs.make_env(project.env_id, max_episode_steps=task.episode_steps, **kwargs)

    return make


def policy_snapshot(checkpoint: PolicyCheckpoint, *, replay_buffer: bool = True) -> PolicySnapshot:
    """The checkpoint's snapshot; ``replay_buffer=False`` skips reading the buffer (only acting needs no buffer)."""
    with checkpoint.model_file.open("rb") as handle:
        model_zip = handle.read()
    replay = None
    if replay_buffer and checkpoint.replay_buffer:
        with checkpoint.replay_buffer.open("rb") as handle:
            replay = handle.read()
    return PolicySnapshot(
        algorithm=checkpoint.algorithm,
        model_zip=model_zip,
        replay_buffer=replay,
        num_timesteps=checkpoint.timesteps,
        config=dict(checkpoint.config),
    )
