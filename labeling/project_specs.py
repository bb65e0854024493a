"""The registry through which labeling creates projects from specs and reads them back (labeling never imports
trainer, which owns the spec's schema: it validates factor sources, loop settings and environments).

``trainer.apps`` registers the two functions at start-up; the API (``POST /api/v1/projects/`` with a ``spec``,
``GET /api/v1/projects/{slug}/spec``) calls them. Both raise ``labeling.errors.ValidationFailed`` for bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accounts.models import User

from .models import Project

Create = Callable[..., Project]  # (*, created_by: User, spec: mapping or YAML/JSON text) -> Project
Export = Callable[[Project], dict[str, Any]]

_HANDLERS: dict[str, Any] = {}


def register(*, create: Create, export: Export) -> None:
    _HANDLERS["create"] = create
    _HANDLERS["export"] = export


def project_create_from_spec(*, created_by: User, spec: Any) -> Project:
    if "create" not in _HANDLERS:
        raise RuntimeError("no project spec handler registered (is trainer in INSTALLED_APPS?)")
    return _HANDLERS["create"](created_by=created_by, spec=spec)


def project_spec(project: Project) -> dict[str, Any]:
    if "export" not in _HANDLERS:
        raise RuntimeError("no project spec handler registered (is trainer in INSTALLED_APPS?)")
    return _HANDLERS["export"](project)
