"""Scripted policies that generate rollouts of graded quality before any learned policy exists.

A policy spec is ``"<name>"`` or ``"<name>:<noise>"``; ``noise`` scales Gaussian action noise relative
to the action range, so one controller at several noise levels gives clips from good to bad.
All randomness comes from the ``rng`` passed in on each call, which keeps rollouts reproducible.

Part of the Django-free core (formerly ``trainer/policies.py``; trained SB3 policies are ``trainer.core.policy``).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import gymnasium
import numpy as np


class UnknownPolicy(ValueError):
    """Raised for a policy spec that cannot be parsed or does not fit the action space."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@runtime_checkable
class ResettablePolicy(Policy, Protocol):
    """A policy with per-episode state (e.g. an open-loop clock); rollouts call ``reset`` first."""

    def reset(self) -> None: ...


def _box(action_space: gymnasium.Space, spec: str) -> gymnasium.spaces.Box:
    if not isinstance(action_space, gymnasium.spaces.Box):
        raise UnknownPolicy(f"policy {spec!r} needs a Box action space, got {action_space!r}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise UnknownPolicy(f"policy {spec!r} needs a bounded action space, got {action_space!r}")
    return action_space


class RandomPolicy:
    """Uniform over a bounded Box, drawn from the caller's rng (``Space.sample`` has its own RNG)."""

    def __init__(self, action_space: gymnasium.spaces.Box) -> None:
        self.name = "random"
        self._low = action_space.low.astype(np.float64)
        self._high = action_space.high.astype(np.float64)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self._low, self._high)


class RandomDiscretePolicy:
    """Uniform over a Discrete space's actions, drawn from the caller's rng."""

    def __init__(self, action_space: gymnasium.spaces.Discrete) -> None:
        self.name = "random"
        self._n = int(action_space.n)
        self._start = int(action_space.start)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.array([self._start + int(rng.integers(0, self._n))], dtype=np.int64)


class _NoisyPolicy:
    """Adds N(0, (noise·half-range)²) to a deterministic controller's action and clips to the box."""

    def __init__(self, name: str, action_space: gymnasium.spaces.Box, noise: float) -> None:
        self.name = name
        self.noise = noise
        self._low = action_space.low.astype(np.float64)
        self._high = action_space.high.astype(np.float64)
        self._noise_std = noise * (self._high - self._low) / 2.0

    def _clean_action(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        action = self._clean_action(obs)
        if self.noise > 0:
            action = action + rng.normal(0.0, self._noise_std)
        return np.clip(action, self._low, self._high)


class ZeroAction(_NoisyPolicy):
    """The action in the middle of the box (zero torque for symmetric ranges) plus noise: a do-nothing baseline
    that works for any bounded Box, so environments without a scripted controller still get graded clips."""

    def _clean_action(self, obs: np.ndarray) -> np.ndarray:
        return (self._low + self._high) / 2.0


class PendulumSwingUp(_NoisyPolicy):
    """Energy-pumping swing-up with a PD balance near the top, for Pendulum-v1.

    Pendulum's dynamics are θ'' = 3g/(2l)·sin θ + 3/(ml²)·u with θ = 0 upright, so the energy
    E = ½θ'² + 3g/(2l)·cos θ is 3g/(2l) at rest upright and dE/dt = 3/(ml²)·u·θ'. Pushing along θ' adds
    energy (the torque limit is far below gravity's, so it must be pumped over several swings); once
    the pendulum is near the top a PD law holds it. Gains were tuned on 200-step episodes from random
    starts (mean return about -140; random play scores about -1200).
    """

    GRAVITY_TERM = 3 * 10.0 / (2 * 1.0)  # 3g/(2l) with Pendulum's defaults g=10, l=1
    BALANCE_ANGLE = 0.5  # rad: below this |θ| the PD balance takes over
    BALANCE_KP = 10.0
    BALANCE_KD = 2.0
    PUMP_GAIN = 0.5

    def _clean_action(self, obs: np.ndarray) -> np.ndarray:
        cos_theta, sin_theta, theta_dot = (float(value) for value in obs[:3])
        theta = math.atan2(sin_theta, cos_theta)
        if abs(theta) < self.BALANCE_ANGLE:
            torque = -(self.BALANCE_KP * theta + self.BALANCE_KD * theta_dot)
        else:
            energy = 0.5 * theta_dot**2 + self.GRAVITY_TERM * cos_theta
            torque = self.PUMP_GAIN * (self.GRAVITY_TERM - energy) * theta_dot
        return np.array([torque], dtype=np.float64)


class HalfCheetahGait(_NoisyPolicy):
    """Open-loop sinusoidal gait for HalfCheetah-v5: every joint follows one sine at its own phase.

    Frequency, amplitude and phases came from a random search over 200-step episodes, choosing the
    candidate whose worst return over several starts was best (open-loop gaits can flip the cheetah
    from unlucky starts). It runs at roughly 1.3 m/s where a random policy barely moves.
    """

    FREQUENCY_HZ = 3.0
    AMPLITUDE = 0.6
    # Joint order: back thigh, back shin, back foot, front thigh, front shin, front foot.
    PHASES = np.array([4.98, 4.24, 2.65, 0.16, 1.06, 4.71])
    STEP_SECONDS = 0.05  # HalfCheetah-v5's dt (timestep 0.01 x frame_skip 5)

    def __init__(self, name: str, action_space: gymnasium.spaces.Box, noise: float) -> None:
        super().__init__(name, action_space, noise)
        self._step = 0

    def reset(self) -> None:
        self._step = 0

    def _clean_action(self, obs: np.ndarray) -> np.ndarray:
        elapsed = self._step * self.STEP_SECONDS
        self._step += 1
        return self.AMPLITUDE * np.sin(2 * np.pi * self.FREQUENCY_HZ * elapsed + self.PHASES)


# The shape () means any Box shape.
_SCRIPTED: dict[str, tuple[type[_NoisyPolicy], tuple[int, ...]]] = {
    "zero": (ZeroAction, ()),
    "pendulum_swingup": (PendulumSwingUp, (1,)),
    "halfcheetah_gait": (HalfCheetahGait, (6,)),
}

SCRIPTED_POLICY_NAMES: tuple[str, ...] = ("random", *_SCRIPTED)


def _parse_noise(spec: str, text: str) -> float:
    try:
        noise = float(text)
    except ValueError:
        raise UnknownPolicy(f"policy {spec!r}: noise {text!r} is not a number") from None
    if not math.isfinite(noise) or noise < 0:
        raise UnknownPolicy(f"policy {spec!r}: noise must be a finite number >= 0")
    return noise


def make_policy(spec: str, action_space: gymnasium.Space) -> Policy:
    """Build a policy from ``"random"`` or ``"<scripted name>:<noise>"`` (noise defaults to 0)."""
    name, _, noise_text = spec.partition(":")
    if isinstance(action_space, gymnasium.spaces.Discrete):
        if spec != "random":
            raise UnknownPolicy(f"policy {spec!r}: a Discrete action space takes the 'random' policy only")
        return RandomDiscretePolicy(action_space)
    box = _box(action_space, spec)
    if name == "random":
        if noise_text:
            raise UnknownPolicy(f"policy {spec!r}: 'random' takes no noise level")
        return RandomPolicy(box)
    if name not in _SCRIPTED:
        known = ", ".join(SCRIPTED_POLICY_NAMES)
        raise UnknownPolicy(f"unknown policy {spec!r}; known policies: {known}")
    policy_class, action_shape = _SCRIPTED[name]
    if action_shape and box.shape != action_shape:
        raise UnknownPolicy(f"policy {spec!r} expects actions of shape {action_shape}, not {box.shape}")
    noise = _parse_noise(spec, noise_text) if noise_text else 0.0
    # The name is the spec as given, so it matches the preset's list and round-trips through make_policy.
    return policy_class(spec, box, noise)
