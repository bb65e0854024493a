"""Reads for the researcher dashboard: rankings and their agreement, reward-model versions, training curves."""

from __future__ import annotations

import json
import math
from typing import Any

from labeling.models import Project
from labeling.rankings import current_rankings

from . import heron
from .models import RewardModel


def ranking_summary(project: Project) -> dict[str, Any]:
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    rankings = list(current_rankings(project).select_related("annotator"))
    summary: dict[str, Any] = {"rankings": rankings, "kendall_w": None, "mean_tau": None}
    if len(rankings) >= 2:
        agreement = heron.ranking_agreement(
            [[tuple(keys.index(k) for k in group) for group in r.groups] for r in rankings], len(keys)
        )
        summary["kendall_w"] = None if math.isnan(agreement.kendall_w) else round(agreement.kendall_w, 3)
        summary["mean_tau"] = None if math.isnan(agreement.mean_tau) else round(agreement.mean_tau, 3)
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
    return json.dumps({"x": epochs, "series": series, "xLabel": "epoch"})
