"""Whether more work for annotators is on its way, from apps labeling doesn't know about.

When an annotator has nothing to do, the answer says whether to wait (new clips are being made) or stop. The
trainer's runs (loop iterations, clip generation) register a check here when Django starts (trainer.apps), so
labeling never imports trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Project

PendingCheck = Callable[["Project"], bool]

_CHECKS: dict[str, PendingCheck] = {}


def register(name: str, check: PendingCheck) -> None:
    _CHECKS[name] = check


def work_pending(project: Project) -> bool:
    return any(check(project) for check in _CHECKS.values())
