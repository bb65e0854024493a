"""The registry of environments a project can use.

`labeling` must not import `trainer`, yet project creation needs each environment's reward factors. The
trainer app therefore registers its presets here when Django starts (trainer.apps), and labeling reads them
through this small protocol. ``external`` (uploaded rollouts) is always available.

Environment constructor arguments (``env_kwargs``) are data, never paths: each environment declares an
allow-list of argument rules (type and range per argument); anything else is refused at project creation.
A rule is any object with the attributes of :class:`KwargRule` (``kind``, ``minimum``, ``maximum``,
``choices``): trainer's presets use ``trainer.core.envs.KwargSpec``, which labeling never imports. The
checking itself (:func:`kwarg_problem`) lives here, beside the rest of project validation.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from django.conf import settings

EXTERNAL = "external"

# Strings that could name a file: separators, a home or drive prefix, or a file extension.
_PATH_LIKE = re.compile(r"[/\\]|^~|^[A-Za-z]:|\.(xml|json|ya?ml|txt|py|so|dll|pkl|npz|mjb|urdf|stl|obj)$", re.I)


class KwargRule(Protocol):
    """One allowed constructor argument: its type (``float``, ``int``, ``bool`` or ``choice``) and range."""

    @property
    def kind(self) -> str: ...
    @property
    def minimum(self) -> float | None: ...
    @property
    def maximum(self) -> float | None: ...
    @property
    def choices(self) -> tuple[str, ...]: ...


def kwarg_problem(rule: KwargRule, value: Any) -> str | None:
    """Why ``value`` is not acceptable for the argument ``rule`` describes, or None."""
    if rule.kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if rule.kind == "choice":
        if isinstance(value, str) and _PATH_LIKE.search(value):
            return "file paths are not allowed"
        return None if value in rule.choices else f"must be one of {list(rule.choices)}"
    if rule.kind not in ("float", "int"):
        return f"unsupported argument kind {rule.kind!r}"  # a preset's mistake: refuse rather than accept
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number" if rule.kind == "float" else "must be a whole number"
    if rule.kind == "int" and not isinstance(value, int):
        return "must be a whole number"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    low = -math.inf if rule.minimum is None else rule.minimum
    high = math.inf if rule.maximum is None else rule.maximum
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}"
    return None


def env_kwargs_problems(env_id: str, env_kwargs: Any) -> dict[str, list[str]]:
    """Every problem of ``env_kwargs`` for ``env_id``, as API field errors keyed ``env_kwargs.<key>``."""
    if not isinstance(env_kwargs, Mapping):
        return {"env_kwargs": ["must be an object"]}
    definition = get(env_id)
    allowed: Mapping[str, KwargRule] = getattr(definition, "allowed_kwargs", None) or {}
    problems: dict[str, list[str]] = {}
    for key, value in env_kwargs.items():
        name = f"env_kwargs.{str(key)[:64]}"
        spec = allowed.get(key) if isinstance(key, str) else None
        if spec is None:
            if isinstance(value, str) and _PATH_LIKE.search(value):
                problems[name] = ["file paths are not allowed"]
            else:
                names = ", ".join(sorted(allowed)) or "none"
                problems[name] = [f"not an allowed argument for {env_id} (allowed: {names})"]
            continue
        problem = kwarg_problem(spec, value)
        if problem:
            problems[name] = [problem]
    return problems


class FactorDefinition(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def direction(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def sigma(self) -> float: ...


class EnvironmentDefinition(Protocol):
    @property
    def env_id(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def segment_steps(self) -> int: ...
    @property
    def render_width(self) -> int: ...
    @property
    def render_height(self) -> int: ...
    @property
    def factors(self) -> Sequence[FactorDefinition]: ...
    @property
    def allowed_kwargs(self) -> Mapping[str, KwargRule]: ...


_REGISTRY: dict[str, EnvironmentDefinition] = {}
# Definitions of environments nobody registered by hand (any Gymnasium id), made on demand by trainer; the
# ALLOWED_ENV_IDS setting decides which ids are offered at all.
_RESOLVERS: list[Callable[[str], EnvironmentDefinition | None]] = []


def register(definition: EnvironmentDefinition) -> None:
    _REGISTRY[definition.env_id] = definition


def register_resolver(resolver: Callable[[str], EnvironmentDefinition | None]) -> None:
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)


def allowed_patterns() -> list[str]:
    return list(getattr(settings, "ALLOWED_ENV_IDS", []))


def is_allowed(env_id: str) -> bool:
    """Whether the deployment offers ``env_id``: a registered preset, or an id matching ``ALLOWED_ENV_IDS``."""
    return env_id in _REGISTRY or any(fnmatch.fnmatchcase(env_id, pattern) for pattern in allowed_patterns())


def get(env_id: str) -> EnvironmentDefinition | None:
    """The definition of an offered environment, or None (unknown, not allowed, or not supported)."""
    if env_id in _REGISTRY:
        return _REGISTRY[env_id]
    if not isinstance(env_id, str) or len(env_id) > 100 or not is_allowed(env_id):
        return None
    for resolver in _RESOLVERS:
        definition = resolver(env_id)
        if definition is not None:
            return definition
    return None


def available() -> list[str]:
    """The registered presets and the ALLOWED_ENV_IDS patterns, for messages."""
    return sorted({*_REGISTRY, *allowed_patterns()})
