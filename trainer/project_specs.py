"""Projects from specs and specs from projects (the Django side of ``trainer.core.project_spec``).

The core checks the spec's shape; here what needs the platform is checked, each problem at its spec path: the
environment is offered (``ALLOWED_ENV_IDS``) and its constructor arguments are allowed, the initial policies and
the algorithm fit its action space, and each factor source can be computed from one real step of it. Only then is
the project created (``labeling.services.project_create``), so a bad spec stores nothing.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from accounts.models import User
from labeling import environments
from labeling.errors import ValidationFailed
from labeling.models import Project
from labeling.services import project_create

from .core import envs
from .core.factor_sources import Step
from .core.policy import PolicyConfig
from .core.project_spec import EXTERNAL, SpecError, parse_spec, spec_from_project
from .core.scripted import UnknownPolicy, make_policy
from .project_task import has_simulator, project_task

_PROJECT_FIELDS = (
    "name", "slug", "instructions", "env_id", "env_kwargs", "episode_steps", "observation_space", "action_space",
    "initial_policies", "segment_steps", "render_width", "render_height", "render_fps", "feedback_mode", "overlap",
    "require_full_view", "lease_ttl_seconds", "gold_rate", "repeat_rate", "qualification_size",
    "qualification_threshold", "loop_settings",
)  # fmt: skip


def _failed(problems: dict[str, list[str]]) -> ValidationFailed:
    first, messages = next(iter(problems.items()))
    return ValidationFailed(f"the project spec is not valid ({first}: {messages[0]})", fields=problems)


def _simulator_problems(fields: dict[str, Any]) -> dict[str, list[str]]:
    """What the environment says about the spec: offered, arguments, policies, algorithm, factor sources."""
    env_id = fields["env_id"]
    if environments.get(env_id) is None:
        allowed = ", ".join(environments.available())
        return {"environment.id": [f"{env_id!r} is not offered here (allowed: {allowed}, or external)"]}
    problems = {
        f"environment.kwargs.{key[len('env_kwargs.') :]}" if key.startswith("env_kwargs.") else "environment.kwargs": m
        for key, m in environments.env_kwargs_problems(env_id, fields["env_kwargs"]).items()
    }
    if problems:
        return problems
    try:
        env = envs.make_env(env_id, **fields["env_kwargs"])
    except Exception as error:  # a value in range the constructor still refuses
        return {"environment.kwargs": [f"{env_id} cannot be built with these arguments: {error}"[:500]]}
    try:
        space = env.action_space
        for index, policy in enumerate(fields["initial_policies"]):
            try:
                make_policy(policy, space)
            except UnknownPolicy as error:
                problems[f"environment.initial_policies.{index}"] = [str(error)]
        algorithm = (fields["loop_settings"].get("policy") or {}).get("algorithm", "auto")
        try:
            PolicyConfig(algorithm=algorithm).resolved_algorithm(space)
        except ValueError as error:
            problems["environment.algorithm"] = [str(error)]
        problems |= _source_problems(env, fields["factors"])
        fields["observation_space"] = {"shape": list(env.observation_space.shape or ())}
        fields["action_space"] = envs.action_space_info(space)
    finally:
        env.close()
    return problems


def _source_problems(env: gymnasium.Env, factors: list[dict[str, Any]] | None) -> dict[str, list[str]]:
    """Each factor source computed on one step from a fixed start, so a missing info key or an index past the
    observation is refused now instead of failing a worker later."""
    if not factors:
        return {}
    obs, _ = env.reset(seed=0)
    space = env.action_space
    action = space.sample() if not isinstance(space, gymnasium.spaces.Box) else (space.low + space.high) / 2
    action = np.nan_to_num(np.asarray(action, dtype=space.dtype), posinf=0.0, neginf=0.0)
    next_obs, reward, _, _, info = env.step(envs.env_action(np.atleast_1d(action), space))
    step = Step(obs=obs, action=np.atleast_1d(action), next_obs=next_obs, reward=float(reward), info=info)
    problems = {}
    for index, factor in enumerate(factors):
        try:
            envs.compiled_source(factor["source"])(step)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            problems[f"factors.{index}.source"] = [
                f"cannot be computed for {env.spec.id if env.spec else env}: {error}"
            ]
    return problems


def project_create_from_spec(*, created_by: User, spec: Any, slug: str | None = None) -> Project:
    """Create the project a spec (mapping or YAML/JSON text) states; ``slug`` overrides the spec's."""
    try:
        fields = parse_spec(spec)
    except SpecError as error:
        raise _failed(error.fields) from None
    if slug:
        fields["slug"] = slug
    if fields["env_id"] != EXTERNAL:
        problems = _simulator_problems(fields)
        if problems:
            raise _failed(problems)
    return project_create(created_by=created_by, **fields)


def project_spec(project: Project) -> dict[str, Any]:
    """The spec of ``project``: creating a project from it (another slug) gives an equal project."""
    fields = {name: getattr(project, name) for name in _PROJECT_FIELDS}
    factors = list(
        project.factors.order_by("position", "id").values(
            "key", "label", "description", "unit", "direction", "sigma", "source"
        )
    )
    if has_simulator(project.env_id):
        # Projects from before factor sources may name a preset factor by its key; the spec names its source.
        sources = {spec.key: spec.source for spec in project_task(project).factors}
        for factor in factors:
            factor["source"] = sources.get(factor["key"], factor["source"])
    return spec_from_project(fields, factors)
