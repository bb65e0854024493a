"""The registry of environments a project can use.

`labeling` must not import `trainer`, yet project creation needs each environment's reward factors. The
trainer app therefore registers its presets here when Django starts (trainer.apps), and labeling reads them
through this small protocol. ``external`` (uploaded rollouts) is always available.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

EXTERNAL = "external"


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


_REGISTRY: dict[str, EnvironmentDefinition] = {}


def register(definition: EnvironmentDefinition) -> None:
    _REGISTRY[definition.env_id] = definition


def get(env_id: str) -> EnvironmentDefinition | None:
    return _REGISTRY.get(env_id)


def available() -> list[str]:
    return sorted(_REGISTRY)
