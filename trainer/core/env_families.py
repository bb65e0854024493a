"""Presets for Gymnasium environments nobody wrote a preset for, derived from the Gymnasium registry.

Any registered id gets an :class:`~trainer.core.envs.EnvPreset`: its family (classic control, Box2D, MuJoCo, or
other, read from the registry's entry point) decides how it renders and which constructor arguments a project
may set. Which ids a deployment offers at all is the platform's decision (``ALLOWED_ENV_IDS``), not this module's.

Factors of a generic preset: the environment's own reward only. A project spec names its own factors as factor
sources (``info:x_velocity``, ``obs:0|sq``, ``action_sq``, …), so nothing here needs to know an environment.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import gymnasium

from .envs import EnvPreset, FactorSpec, KwargSpec

CLASSIC_CONTROL = "classic_control"
BOX2D = "box2d"
MUJOCO = "mujoco"
OTHER = "other"

# The constructor arguments a project may set, per family: numbers and switches with ranges, never file paths
# (MuJoCo's xml_file) or objects. An environment is offered only those its constructor really takes.
_FAMILY_KWARGS: Mapping[str, Mapping[str, KwargSpec]] = MappingProxyType(
    {
        CLASSIC_CONTROL: MappingProxyType(
            {
                "g": KwargSpec("float", 0.0, 100.0),
                "goal_velocity": KwargSpec("float", 0.0, 1.0),
                "sutton_barto_reward": KwargSpec("bool"),
            }
        ),
        BOX2D: MappingProxyType(
            {
                "continuous": KwargSpec("bool"),
                "gravity": KwargSpec("float", -12.0, 0.0),
                "enable_wind": KwargSpec("bool"),
                "wind_power": KwargSpec("float", 0.0, 20.0),
                "turbulence_power": KwargSpec("float", 0.0, 2.0),
                "hardcore": KwargSpec("bool"),
            }
        ),
        MUJOCO: MappingProxyType(
            {
                "forward_reward_weight": KwargSpec("float", 0.0, 100.0),
                "ctrl_cost_weight": KwargSpec("float", 0.0, 100.0),
                "contact_cost_weight": KwargSpec("float", 0.0, 100.0),
                "healthy_reward": KwargSpec("float", 0.0, 100.0),
                "terminate_when_unhealthy": KwargSpec("bool"),
                "reset_noise_scale": KwargSpec("float", 0.0, 10.0),
                "exclude_current_positions_from_observation": KwargSpec("bool"),
            }
        ),
        OTHER: MappingProxyType({}),
    }
)

# Frames of a clip's video; MuJoCo draws at this size directly, the others are resized.
RENDER_WIDTH, RENDER_HEIGHT = 320, 240
SEGMENT_STEPS = 50
# Episodes of generated clips: the environment's own limit when shorter, else this (clips need few steps).
EPISODE_STEPS = 200
# MuJoCo's tracking camera; without it Gymnasium's free camera stays where the body was at the first render.
TRACKING_CAMERA = "track"


def family_of(env_id: str) -> str:
    """The family of a registered id, from its entry point's module."""
    entry_point = gymnasium.spec(env_id).entry_point
    module = entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")
    for family in (CLASSIC_CONTROL, BOX2D, MUJOCO):
        if f"gymnasium.envs.{family}" in module:
            return family
    return OTHER


def _constructor_parameters(env_id: str) -> set[str]:
    entry_point = gymnasium.spec(env_id).entry_point
    if isinstance(entry_point, str):
        module_name, _, attribute = entry_point.partition(":")
        try:
            entry_point = getattr(__import__(module_name, fromlist=[attribute]), attribute)
        except (ImportError, AttributeError):  # Box2D ids without Box2D installed: nothing may be set
            return set()
    if not callable(entry_point):
        return set()
    try:
        return set(inspect.signature(entry_point).parameters)
    except (TypeError, ValueError):
        return set()


@functools.lru_cache(maxsize=128)
def _camera_names(env_id: str) -> tuple[str, ...]:
    # Built once per id (a model compiles in milliseconds); the camera list is part of the model file.
    import mujoco

    env = gymnasium.make(env_id)
    try:
        model = env.unwrapped.model  # type: ignore[attr-defined]
        names = (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, index) for index in range(model.ncam))
        return tuple(name for name in names if name)
    finally:
        env.close()


@functools.lru_cache(maxsize=256)
def generic_preset(env_id: str) -> EnvPreset:
    """A preset for any registered Gymnasium id; raises ``gymnasium.error.Error`` for an unregistered one."""
    spec = gymnasium.spec(env_id)
    family = family_of(env_id)
    parameters = _constructor_parameters(env_id)
    allowed = {name: rule for name, rule in _FAMILY_KWARGS[family].items() if name in parameters}
    render_kwargs: dict[str, Any] = {}
    if family == MUJOCO and TRACKING_CAMERA in _camera_names(env_id):
        render_kwargs["camera_name"] = TRACKING_CAMERA
    limit = spec.max_episode_steps
    return EnvPreset(
        env_id=env_id,
        label=env_id,
        description=f"Gymnasium's {env_id} ({family.replace('_', ' ')}).",
        factors=(
            FactorSpec(
                key="reward",
                label="Reward",
                description="The environment's own reward per step. Higher is better.",
                unit="",
                direction=1,
                source="reward",
            ),
        ),
        env_kwargs=MappingProxyType({}),
        segment_steps=SEGMENT_STEPS,
        episode_steps=min(limit, EPISODE_STEPS) if limit else EPISODE_STEPS,
        render_width=RENDER_WIDTH,
        render_height=RENDER_HEIGHT,
        scripted_policies=(),
        renders_at_requested_size=family == MUJOCO,
        render_kwargs=MappingProxyType(render_kwargs),
        reward_formula="",
        allowed_kwargs=MappingProxyType(allowed),
    )
