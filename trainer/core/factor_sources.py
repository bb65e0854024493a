"""Where a reward factor's per-step value comes from, written as a short string (``RewardFactor.source``).

A project spec names each factor's source instead of code, so any Gymnasium environment (or a dataset of
observations, actions and rewards) can be labelled without writing an extractor::

    source    := base ("|" transform)*
    base      := "reward"                      the environment's own reward for the step
               | "info:" KEY                   float(info[KEY]) from the step's info dict
               | "obs:" I                      element I of the (flattened) observation before the step
               | "next_obs:" I                 element I of the observation after the step
               | "obs_norm" [":" I ":" J]      Euclidean norm of the observation (or of elements I..J-1)
               | "action:" I                   element I of the action (a discrete action: its index)
               | "action_norm"                 Euclidean norm of the action
               | "action_sq"                   sum of the squared action elements
               | ["extractor:"] NAME           a named extractor from the registry (e.g. pendulum.angle_sq)
    transform := "sq" | "abs" | "neg"          applied left to right

Examples: ``info:x_velocity``, ``obs:2|sq``, ``action_sq``, ``reward|neg``, ``pendulum.torque_sq``.
Parsing is strict (``parse_source`` raises ``ValueError`` naming the problem) so a bad spec is refused when the
project is created, not when a worker first steps the environment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_SOURCE_LENGTH = 100
TRANSFORMS: Mapping[str, Callable[[float], float]] = {"sq": lambda x: x * x, "abs": abs, "neg": lambda x: -x}
_INFO_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,5})$")


@dataclass(frozen=True)
class Step:
    """One environment step, as a factor source sees it."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    reward: float
    info: Mapping[str, Any]


StepExtractor = Callable[[Step], float]
# Named extractors (trainer.core.envs registers the presets' ones): (obs, action, next_obs, info) -> float.
NamedExtractor = Callable[[np.ndarray, np.ndarray, np.ndarray, Mapping[str, Any]], float]


@dataclass(frozen=True)
class FactorSource:
    """A parsed source: what it reads (for validation against data) and how to compute it."""

    text: str
    reads: str  # "reward", "info", "obs", "next_obs", "action" or "extractor"
    key: str | None  # the info key or extractor name
    index: int | None  # the element read by obs:/next_obs:/action:, or the first of an obs_norm slice
    stop: int | None  # the end of an obs_norm slice
    extract: StepExtractor

    def __call__(self, step: Step) -> float:
        return self.extract(step)


def _index(text: str, what: str) -> int:
    if not _INDEX.match(text):
        raise ValueError(f"{what} must be an element index (0, 1, 2, …), not {text!r}")
    return int(text)


def _element(values: np.ndarray, index: int, what: str) -> float:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if index >= flat.size:
        raise ValueError(f"{what} element {index} does not exist: it has {flat.size} elements")
    return float(flat[index])


def _element_source(text: str, reads: str, index: int) -> FactorSource:
    def extract(step: Step) -> float:
        return _element(getattr(step, reads), index, reads)

    return FactorSource(text, reads, None, index, None, extract)


def _base(text: str, named: Mapping[str, NamedExtractor]) -> FactorSource:
    def source(reads: str, extract: StepExtractor, *, key=None, index=None, stop=None) -> FactorSource:
        return FactorSource(text, reads, key, index, stop, extract)

    if text == "reward":
        return source("reward", lambda s: float(s.reward))
    if text.startswith("info:"):
        key = text[len("info:") :]
        if not _INFO_KEY.match(key):
            raise ValueError(f"info key {key!r} must be a name (letters, digits, _ . -)")

        def from_info(step: Step) -> float:
            if key not in step.info:
                raise ValueError(f"the step's info has no {key!r} (it has {sorted(step.info)[:20]})")
            return float(np.asarray(step.info[key], dtype=np.float64).reshape(-1)[0])

        return source("info", from_info, key=key)
    for reads in ("obs", "next_obs", "action"):
        if text.startswith(f"{reads}:"):
            return _element_source(text, reads, _index(text[len(reads) + 1 :], reads))
    if text == "obs_norm" or text.startswith("obs_norm:"):
        parts = text.split(":")[1:]
        if not parts:
            return source("obs", lambda s: float(np.linalg.norm(np.asarray(s.obs, dtype=np.float64))))
        if len(parts) != 2:
            raise ValueError("obs_norm takes no slice or two indices: obs_norm:I:J")
        start, stop = _index(parts[0], "obs_norm start"), _index(parts[1], "obs_norm stop")
        if stop <= start:
            raise ValueError(f"obs_norm:{start}:{stop} is empty")

        def slice_norm(step: Step) -> float:
            flat = np.asarray(step.obs, dtype=np.float64).reshape(-1)
            if stop > flat.size:
                raise ValueError(f"obs_norm:{start}:{stop} reaches past the observation's {flat.size} elements")
            return float(np.linalg.norm(flat[start:stop]))

        return source("obs", slice_norm, index=start, stop=stop)
    if text == "action_norm":
        return source("action", lambda s: float(np.linalg.norm(np.asarray(s.action, dtype=np.float64))))
    if text == "action_sq":
        return source("action", lambda s: float(np.sum(np.square(np.asarray(s.action, dtype=np.float64)))))
    name = text[len("extractor:") :] if text.startswith("extractor:") else text
    extractor = named.get(name)
    if extractor is None:
        raise ValueError(
            f"unknown factor source {text!r}: use reward, info:KEY, obs:I, next_obs:I, obs_norm[:I:J], action:I, "
            f"action_norm, action_sq or a named extractor ({', '.join(sorted(named))})"
        )
    return source("extractor", lambda s: float(extractor(s.obs, s.action, s.next_obs, s.info)), key=name)


def parse_source(text: str, named: Mapping[str, NamedExtractor] | None = None) -> FactorSource:
    """Parse ``text`` (see the module docstring); raises ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a factor source is required")
    if len(text) > MAX_SOURCE_LENGTH:
        raise ValueError(f"a factor source is at most {MAX_SOURCE_LENGTH} characters")
    base_text, *transforms = text.strip().split("|")
    base = _base(base_text, named or {})
    for name in transforms:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}: use {', '.join(TRANSFORMS)}")
    if not transforms:
        return base
    functions = [TRANSFORMS[name] for name in transforms]

    def transformed(step: Step) -> float:
        value = base.extract(step)
        for function in functions:
            value = function(value)
        return value

    return FactorSource(text.strip(), base.reads, base.key, base.index, base.stop, transformed)


def check_finite(values: np.ndarray, what: str) -> None:
    """Factor values must be finite numbers: a NaN would poison every total and every HERON margin."""
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ValueError(f"{what} is not finite at {bad}")
