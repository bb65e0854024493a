"""How the trainer reacts to labeling's events."""

from __future__ import annotations

from typing import Any

from labeling.models import FactorRanking, Judgment


def on_ranking_submitted(sender: type, ranking: FactorRanking, **kwargs: Any) -> None:
    """A new ranking changes the HERON labels: rebuild the preference set and retrain (one retrain run; while
    another run of the project is active it waits, and a burst of rankings makes one retrain, not many)."""
    from .loop import run_start
    from .models import RunKind

    project = ranking.project
    if project.loop_settings.get("retrain_on_ranking", True):
        run_start(project=project, kind=RunKind.RETRAIN, created_by=ranking.annotator, params={"sources": "auto"})


def on_judgment_recorded(sender: type, judgment: Judgment, **kwargs: Any) -> None:
    """A pairwise iteration waiting for its label budget starts as soon as the budget is met.

    Runs on every answer, so it first asks the one cheap question (is anything of this project waiting for
    labels?); runs that wait for their project's lane are started when the active run ends, not here."""
    from .loop import runs_start_next
    from .models import Run, RunState

    project_id = judgment.query.project_id
    waiting = Run.objects.filter(
        project_id=project_id, state=RunState.QUEUED, paused=False, start_after_labels__isnull=False
    )
    if waiting.order_by().exists():
        runs_start_next(project_id)
