"""Environment presets: which Gymnasium environments Heronry offers and which factors annotators rank.

Everything about an environment that the rest of the platform needs (factor definitions, clip and
episode lengths, render size, scripted policies) is data in ``PRESETS``; adding an environment means
adding one ``EnvPreset`` and the per-step extractors its factors name.

Part of the Django-free core (formerly ``trainer/envs.py``). ``trainer.apps`` registers ``PRESETS`` into
``labeling.environments`` at start-up, so labeling learns the environments without importing trainer.
"""

from __future__ import annotations

import os

# Rendering is headless everywhere (web workers, CI, CPU-only machines). MuJoCo picks its GL backend
# and pygame its video driver when they first start, so the defaults are set before anything can
# import them; an explicit setting in the environment still wins.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnasium
import numpy as np

from .factor_sources import FactorSource, Step, parse_source


@dataclass(frozen=True)
class KwargSpec:
    """One constructor argument a project may set: its type (``float``, ``int``, ``bool`` or ``choice``) and range.

    Data only: project creation checks values against it in ``labeling.environments.kwarg_problem``, which
    accepts any object with these attributes (labeling never imports trainer)."""

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "bool", "choice"):
            raise ValueError(f"KwargSpec kind must be float, int, bool or choice, not {self.kind!r}")


class UnknownEnvironment(ValueError):
    """Raised for an environment id that has no preset."""


class UnknownExtractor(ValueError):
    """Raised for a factor source that names no registered extractor."""


@dataclass(frozen=True)
class FactorSpec:
    """One reward factor: a per-step quantity that annotators rank clips by."""

    key: str
    label: str
    description: str
    unit: str
    direction: int  # +1: higher is better; -1: lower is better
    source: str  # key into EXTRACTORS
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"factor {self.key!r}: direction must be +1 or -1, not {self.direction!r}")


@dataclass(frozen=True)
class EnvPreset:
    env_id: str
    label: str
    description: str
    factors: tuple[FactorSpec, ...]
    env_kwargs: Mapping[str, Any] = field(hash=False)  # mappings cannot be hashed; the id already is unique
    segment_steps: int
    episode_steps: int
    render_width: int
    render_height: int
    scripted_policies: tuple[str, ...]
    # Whether gymnasium.make accepts width/height for rgb_array rendering (MuJoCo does; the classic
    # control environments draw at a fixed size and frames are resized afterwards).
    renders_at_requested_size: bool = False
    # Constructor kwargs used only when rendering (camera choice); never part of a rollout's identity.
    render_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # The environment's own reward in terms of the factors, for documentation and reports.
    reward_formula: str = ""
    # The constructor arguments a project may set (type and range each); anything else, file paths
    # above all (MuJoCo's xml_file), is refused at project creation (labeling.environments.kwarg_problem).
    allowed_kwargs: Mapping[str, KwargSpec] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def factor_keys(self) -> tuple[str, ...]:
        return tuple(factor.key for factor in self.factors)


Extractor = Callable[[np.ndarray, np.ndarray, np.ndarray, Mapping[str, Any]], float]

# Pendulum-v1 clips the torque to this before computing both dynamics and cost.
PENDULUM_MAX_TORQUE = 2.0


def _pendulum_angle(obs: np.ndarray) -> float:
    # obs = [cos θ, sin θ, θdot]; atan2 gives θ in (-π, π], the same square as Pendulum's
    # angle_normalize (which maps into [-π, π)).
    return math.atan2(float(obs[1]), float(obs[0]))


def _pendulum_angle_sq(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, info: Mapping[str, Any]) -> float:
    return _pendulum_angle(obs) ** 2


def _pendulum_angular_velocity_sq(
    obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, info: Mapping[str, Any]
) -> float:
    return float(obs[2]) ** 2


def _pendulum_torque_sq(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, info: Mapping[str, Any]) -> float:
    torque = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
    return min(max(torque, -PENDULUM_MAX_TORQUE), PENDULUM_MAX_TORQUE) ** 2


def _mujoco_forward_velocity(
    obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, info: Mapping[str, Any]
) -> float:
    return float(info["x_velocity"])


def _mujoco_control_cost(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, info: Mapping[str, Any]) -> float:
    return -float(info["reward_ctrl"])


EXTRACTORS: Mapping[str, Extractor] = MappingProxyType(
    {
        "pendulum.angle_sq": _pendulum_angle_sq,
        "pendulum.angular_velocity_sq": _pendulum_angular_velocity_sq,
        "pendulum.torque_sq": _pendulum_torque_sq,
        "mujoco.forward_velocity": _mujoco_forward_velocity,
        "mujoco.control_cost": _mujoco_control_cost,
    }
)

# Noise levels chosen per controller so the mean 200-step return falls in even steps from the clean
# controller towards random play (measured over 30 seeds; see trainer.core.scripted).
_PENDULUM_NOISE_LEVELS = ("0.0", "1.0", "1.5", "2.0")  # ≈ -140, -265, -515, -650; random ≈ -1210
_HALF_CHEETAH_NOISE_LEVELS = ("0.0", "0.1", "0.2", "0.4")  # ≈ 233, 149, 30, -10; random ≈ -55

_PENDULUM = EnvPreset(
    env_id="Pendulum-v1",
    label="Pendulum",
    description="Swing a pendulum up and keep it balanced upright with as little effort as possible.",
    factors=(
        FactorSpec(
            key="angle_sq",
            label="Angle²",
            description="How far the pendulum is from pointing straight up (squared angle). Lower is better.",
            unit="rad²",
            direction=-1,
            source="pendulum.angle_sq",
            # A quarter of the pool's spread, not a whole one: the pool spans hanging (angle² ≈ π² per step) to
            # balanced (≈ 0), so with σ = 1 two clips tie on angle unless their mean angle² differs by ~2.2 rad² (a
            # clip held ~1.5 rad off upright) — a balanced clip and one 1 rad off tie, the learned reward is flat near
            # the top and the first policy swings around it instead of balancing (issue 13: iteration 1 −764.5 over
            # 10 seeds; with 0.25 the reward falls off from the top and it balances, −187.3 over 5; bench/README.md,
            # "HERON's first policy").
            sigma=0.25,
        ),
        FactorSpec(
            key="angular_velocity_sq",
            label="Angular velocity²",
            description="How fast the pendulum is spinning (squared angular speed). Lower is better.",
            unit="rad²/s²",
            direction=-1,
            source="pendulum.angular_velocity_sq",
        ),
        FactorSpec(
            key="torque_sq",
            label="Torque²",
            description="How hard the motor pushes (squared torque). Lower is better.",
            unit="N²·m²",
            direction=-1,
            source="pendulum.torque_sq",
        ),
    ),
    env_kwargs=MappingProxyType({}),
    segment_steps=50,
    episode_steps=200,
    render_width=320,
    render_height=320,
    scripted_policies=("random", *(f"pendulum_swingup:{noise}" for noise in _PENDULUM_NOISE_LEVELS)),
    renders_at_requested_size=False,
    reward_formula="reward = -(angle_sq + 0.1 * angular_velocity_sq + 0.001 * torque_sq)",
    allowed_kwargs=MappingProxyType({"g": KwargSpec("float", 0.0, 100.0)}),
)

_HALF_CHEETAH = EnvPreset(
    env_id="HalfCheetah-v5",
    label="Half Cheetah",
    description="Make a two-legged planar cheetah run forward fast without wasting effort.",
    factors=(
        FactorSpec(
            key="forward_velocity",
            label="Forward velocity",
            description="How fast the cheetah moves forward. Higher is better.",
            unit="m/s",
            direction=1,
            source="mujoco.forward_velocity",
        ),
        FactorSpec(
            key="control_cost",
            label="Control effort",
            description="How much effort the joints spend (weighted squared actions). Lower is better.",
            unit="",
            direction=-1,
            source="mujoco.control_cost",
        ),
    ),
    env_kwargs=MappingProxyType({}),
    segment_steps=50,
    # The Gymnasium time limit is 1000 steps; 200 is plenty for clips and keeps rollouts cheap.
    episode_steps=200,
    render_width=320,
    render_height=240,
    scripted_policies=("random", *(f"halfcheetah_gait:{noise}" for noise in _HALF_CHEETAH_NOISE_LEVELS)),
    renders_at_requested_size=True,
    # Gymnasium 1.4 renders MuJoCo envs through a free camera that stays where the body was at the
    # first render, so the cheetah runs out of shot and a clip's framing would depend on when
    # rendering started. The model's "track" camera follows the centre of mass: stable, deterministic.
    render_kwargs=MappingProxyType({"camera_name": "track"}),
    reward_formula="reward = forward_reward_weight * forward_velocity - control_cost",
    allowed_kwargs=MappingProxyType(
        {
            "forward_reward_weight": KwargSpec("float", 0.0, 100.0),
            "ctrl_cost_weight": KwargSpec("float", 0.0, 100.0),
            "reset_noise_scale": KwargSpec("float", 0.0, 10.0),
            "exclude_current_positions_from_observation": KwargSpec("bool"),
        }
    ),
)

PRESETS: Mapping[str, EnvPreset] = MappingProxyType({preset.env_id: preset for preset in (_PENDULUM, _HALF_CHEETAH)})


def get_preset(env_id: str) -> EnvPreset:
    """The hand-written preset of ``env_id``, else one derived from Gymnasium's registry (``env_families``).

    Whether a deployment offers an id at all is decided by the platform (``ALLOWED_ENV_IDS``), not here."""
    if env_id in PRESETS:
        return PRESETS[env_id]
    from .env_families import generic_preset  # beside this module; it builds EnvPresets

    try:
        return generic_preset(env_id)
    except gymnasium.error.Error:
        known = ", ".join(sorted(PRESETS))
        raise UnknownEnvironment(
            f"unknown environment {env_id!r}: not a registered Gymnasium id (presets: {known})"
        ) from None


def task_definition(
    env_id: str,
    *,
    factors: tuple[FactorSpec, ...] | None = None,
    episode_steps: int | None = None,
    segment_steps: int | None = None,
    scripted_policies: tuple[str, ...] | None = None,
) -> EnvPreset:
    """One task: the environment's preset with a project's own choices on top (the one way callers learn a
    project's factors, episode length and first policies; ``trainer.project_task`` reads them off a project).

    A factor whose source names one of the preset's factors (by key or source) reads the preset's extractor,
    so projects made before factor sources existed keep their numbers; any other source is a factor-source
    string (``trainer.core.factor_sources``), checked here."""
    preset = get_preset(env_id)
    changes: dict[str, Any] = {}
    if factors is not None:
        known = {spec.key: spec.source for spec in preset.factors} | {s.source: s.source for s in preset.factors}
        resolved = []
        for factor in factors:
            if factor.source in known:
                source = known[factor.source]
            elif not factor.source:
                source = known.get(factor.key, factor.key)
            else:
                source = factor.source
            compiled_source(source)  # raises UnknownExtractor for a source nobody can compute
            resolved.append(dataclasses.replace(factor, source=source))
        changes["factors"] = tuple(resolved)
    if episode_steps:
        changes["episode_steps"] = int(episode_steps)
    if segment_steps:
        changes["segment_steps"] = int(segment_steps)
    if scripted_policies:
        changes["scripted_policies"] = tuple(scripted_policies)
    return dataclasses.replace(preset, **changes) if changes else preset


def env_action(action: np.ndarray, action_space: gymnasium.Space) -> Any:
    """A stored action row in the form ``env.step`` takes: a plain int for Discrete (stored as shape (1,))."""
    if isinstance(action_space, gymnasium.spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return action


def action_space_info(action_space: gymnasium.Space) -> dict[str, Any]:
    """A JSON description of an action space: {"kind": "box", "shape": [...]} or {"kind": "discrete", "n": N}."""
    if isinstance(action_space, gymnasium.spaces.Discrete):
        return {"kind": "discrete", "n": int(action_space.n)}
    if isinstance(action_space, gymnasium.spaces.Box):
        return {"kind": "box", "shape": list(action_space.shape)}
    raise ValueError(f"only Box and Discrete action spaces are supported, not {action_space!r}")


def effective_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset's default constructor kwargs overridden by ``env_kwargs``."""
    return {**get_preset(env_id).env_kwargs, **(env_kwargs or {})}


def make_env(
    env_id: str,
    *,
    render: bool = False,
    width: int | None = None,
    height: int | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> gymnasium.Env:
    """Create a preset's environment with the preset's default kwargs overridden by ``kwargs``.

    ``render=True`` selects ``rgb_array`` rendering and applies the preset's ``render_kwargs``.
    ``width``/``height`` default to the preset's render size and reach only environments that can
    render at any size; the others (Pendulum draws 500x500) ignore them and callers resize frames.
    ``max_episode_steps`` (the TimeLimit) defaults to the preset's episode length.
    """
    preset = get_preset(env_id)
    make_kwargs = effective_env_kwargs(env_id, kwargs)
    if render:
        make_kwargs = {**preset.render_kwargs, **make_kwargs, "render_mode": "rgb_array"}
        if preset.renders_at_requested_size:
            make_kwargs["width"] = width or preset.render_width
            make_kwargs["height"] = height or preset.render_height
    return gymnasium.make(
        env_id,
        max_episode_steps=max_episode_steps or preset.episode_steps,
        **make_kwargs,
    )


@functools.lru_cache(maxsize=1024)
def compiled_source(source: str) -> FactorSource:
    """A factor source parsed once (see trainer.core.factor_sources); named extractors come from EXTRACTORS."""
    try:
        return parse_source(source, EXTRACTORS)
    except ValueError as error:
        raise UnknownExtractor(str(error)) from None


def factor_values(
    preset: EnvPreset,
    obs: np.ndarray,
    action: np.ndarray,
    next_obs: np.ndarray,
    info: Mapping[str, Any],
    reward: float = 0.0,
) -> np.ndarray:
    """The preset's factors for one step, shape (K,), float64, in ``preset.factors`` order."""
    step = Step(obs=obs, action=action, next_obs=next_obs, reward=reward, info=info)
    values = np.empty(len(preset.factors), dtype=np.float64)
    for index, factor in enumerate(preset.factors):
        values[index] = compiled_source(factor.source)(step)
    return values
