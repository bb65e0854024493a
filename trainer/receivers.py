"""How the trainer reacts to labeling's events."""

from __future__ import annotations

from typing import Any

from labeling.models import FactorRanking, JobKind, Judgment
from labeling.services import job_start


def on_ranking_submitted(sender: type, ranking: FactorRanking, **kwargs: Any) -> None:
    """A new ranking changes the HERON labels: rebuild the preference set and retrain (one job chain)."""
    project = ranking.project
    if project.loop_settings.get("retrain_on_ranking", True):
        job_start(
            project=project,
            kind=JobKind.BUILD_PREFERENCES,
            created_by=ranking.annotator,
            params={"sources": "auto", "train": True},
        )


def on_judgment_recorded(sender: type, judgment: Judgment, **kwargs: Any) -> None:
    """A pairwise iteration waiting for its label budget starts as soon as the budget is met."""
    from .loop import iterations_start_waiting

    iterations_start_waiting(judgment.query.project_id)
