"""How the trainer reacts to labeling's events."""

from __future__ import annotations

import logging
from typing import Any

from labeling.models import FactorRanking, Judgment

logger = logging.getLogger(__name__)


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


def on_run_state_changed(sender: type, run_id: int, kind: str, state: str, **kwargs: Any) -> None:
    """A loop iteration is done: its metrics go to TensorBoard (and MLflow when configured).

    Tracking is a side channel: whatever goes wrong is logged, and the run stays done."""
    from .models import Run, RunKind, RunState
    from .tracking import iteration_track

    if kind != RunKind.ITERATION or state != RunState.DONE:
        return
    try:
        run = Run.objects.select_related("project", "reward_model", "preference_set").get(pk=run_id)
        iteration_track(run=run)
    except Exception:
        logger.exception("run %s: writing its metrics to the trackers failed", run_id)
