"""A project's task: its environment's preset with the project's own factors, lengths and first policies.

The one way the Django side learns what to simulate and score for a project (clip generation, the loop's
rollouts and policy training); ``trainer.core.envs.task_definition`` does the merging. ``resolve_environment``
is what ``trainer.apps`` registers into ``labeling.environments`` so labeling can check any allowed Gymnasium id.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium

from labeling import environments
from labeling.models import Project

from .core import envs


def has_simulator(env_id: str) -> bool:
    """Whether clips and policies can be made by stepping ``env_id`` (not an uploaded or dataset project)."""
    return env_id != environments.EXTERNAL and environments.get(env_id) is not None


def project_task(project: Project) -> envs.EnvPreset:
    """The task of a simulator project; raises ValueError (``envs.UnknownEnvironment``, a bad factor source)."""
    factors = tuple(
        envs.FactorSpec(
            key=factor.key,
            label=factor.label,
            description=factor.description,
            unit=factor.unit,
            direction=factor.direction,
            source=factor.source,
            sigma=factor.sigma,
        )
        for factor in project.factors.order_by("position", "id")
    )
    return envs.task_definition(
        project.env_id,
        factors=factors,
        episode_steps=project.episode_steps,
        segment_steps=project.segment_steps,
        scripted_policies=tuple(project.initial_policies or ()),
    )


def make_project_env(project: Project, *, max_episode_steps: int | None = None, **overrides: Any) -> gymnasium.Env:
    """The project's environment with its constructor arguments, time-limited to its episode length."""
    task = project_task(project)
    return envs.make_env(
        project.env_id, max_episode_steps=max_episode_steps or task.episode_steps, **{**project.env_kwargs, **overrides}
    )


@functools.lru_cache(maxsize=256)
def resolve_environment(env_id: str) -> envs.EnvPreset | None:
    """The preset of any registered Gymnasium id whose spaces the platform handles (a flat Box observation; a
    Box or Discrete action), else None. Registered into ``labeling.environments`` by ``trainer.apps``."""
    try:
        preset = envs.get_preset(env_id)
        env = envs.make_env(env_id)
    except Exception:  # not registered, or its simulator is not installed (Box2D, MuJoCo)
        return None
    try:
        observation, action = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(observation, gymnasium.spaces.Box) or len(observation.shape) != 1:
        return None
    if not isinstance(action, gymnasium.spaces.Box | gymnasium.spaces.Discrete):
        return None
    return preset
