"""Reads for the researcher dashboard: rankings and their agreement, reward-model versions, training curves."""

from __future__ import annotations

import json
import math
from typing import Any

from labeling import quality
from labeling.models import Project
from labeling.rankings import current_rankings

from .models import RewardModel


def ranking_summary(project: Project) -> dict[str, Any]:
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    rankings = list(current_rankings(project).select_related("annotator"))
    summary: dict[str, Any] = {"rankings": rankings, "kendall_w": None, "mean_tau": None}
    if len(rankings) >= 2:
        # Kendall's tau and W have one owner, labeling.quality (the annotator-quality report uses it too).
        concordance = quality.ranking_concordance([r.groups for r in rankings], keys)
        summary["kendall_w"] = None if math.isnan(concordance.w) else round(concordance.w, 3)
        summary["mean_tau"] = None if math.isnan(concordance.mean_tau) else round(concordance.mean_tau, 3)
    return summary


def reward_models(project: Project, limit: int = 10) -> list[RewardModel]:
    return list(RewardModel.objects.filter(project=project).order_by("-version")[:limit])


def training_chart(model: RewardModel | None) -> str | None:
    """The chart spec (JSON for data-chart) of a model's validation loss and accuracy per epoch."""
    if model is None or not model.history:
        return None
    epochs = [row["epoch"] for row in model.history]
    series = [
        {"label": "validation loss", "values": [row.get("val_loss") for row in model.history]},
        {"label": "validation accuracy", "values": [row.get("val_accuracy") for row in model.history]},
        {"label": "training loss", "values": [row.get("train_loss") for row in model.history]},
    ]
    return json.dumps({"x": epochs, "series": series, "xLabel": "epoch", "xIntegers": True})


def runs_overview(project: Project, limit: int = 20) -> dict[str, Any]:
    """The dashboard's runs table (every kind, newest first) and its chart of true vs learned return per iteration."""
    from .loop import pairwise_labels
    from .models import FINISHED_STATES, Run, RunKind

    runs = list(
        Run.objects.filter(project=project)
        .select_related("reward_model", "policy")
        .order_by("-created_at", "-id")[:limit]
    )
    iterations = list(
        Run.objects.filter(project=project, kind=RunKind.ITERATION, policy__isnull=False)
        .select_related("policy")
        .order_by("-number")[:limit]
    )
    evaluated = list(reversed(iterations))
    chart = None
    if evaluated:
        chart = json.dumps(
            {
                "x": [it.number for it in evaluated],
                # Separate y axes: the learned return is in reward-model units (which change from one model to
                # the next), the true one in the environment's; one shared axis would flatten one of them.
                "series": [
                    {"label": "true return", "values": [it.policy.true_return for it in evaluated], "axis": "left"},
                    {
                        "label": "learned return (model units)",
                        "values": [it.policy.learned_return for it in evaluated],
                        "axis": "right",
                    },
                ],
                "xLabel": "iteration",
                "yLabel": "true return",
                "y2Label": "learned return",
                "xIntegers": True,
            }
        )
    unfinished_iteration = (
        Run.objects.filter(project=project, kind=RunKind.ITERATION).exclude(state__in=FINISHED_STATES).first()
    )
    return {
        "runs": runs,
        "any_unfinished": any(run.state not in FINISHED_STATES for run in runs),
        "active_iteration": unfinished_iteration,
        "returns_chart": chart,
        "labels": pairwise_labels(project),
    }
