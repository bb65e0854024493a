"""Held-out clips: never seen in training, so the correlation with the true return on them measures how the
reward generalises to new behaviour, not how well it fits the clips it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.core.reward.metrics import pairwise_accuracy, return_correlations
from trainer.core.reward.network import RewardEnsemble


def holdout_mask(n_clips: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over ``n_clips`` holding out ``round(fraction * n_clips)`` clips (none if that is under 3)."""
    if not 0.0 <= fraction < 0.9:
        raise ValueError("holdout_clip_fraction must be in [0, 0.9)")
    mask = np.zeros(n_clips, dtype=bool)
    count = round(fraction * n_clips)
    if count >= 3:
        mask[rng.choice(n_clips, size=count, replace=False)] = True
    return mask


def holdout_metrics(
    model: RewardEnsemble,
    features: np.ndarray,
    true_returns: np.ndarray,
    holdout: np.ndarray,
    pairs: np.ndarray,
    targets: np.ndarray,
) -> dict[str, Any]:
    """Accuracy on labelled pairs between held-out clips, and correlation with the true return on those clips."""
    if not holdout.any():
        return {"holdout_clips": 0}
    returns = np.full(len(features), np.nan)
    returns[holdout] = model.predict_returns(features[holdout])
    both = holdout[pairs[:, 0]] & holdout[pairs[:, 1]]
    accuracy = (
        pairwise_accuracy(returns[pairs[both, 0]] - returns[pairs[both, 1]], targets[both])
        if both.any()
        else float("nan")
    )
    spearman, pearson = return_correlations(returns[holdout], true_returns[holdout])
    return {
        "holdout_clips": int(holdout.sum()),
        "holdout_pairs": int(both.sum()),
        "holdout_accuracy": accuracy,
        "holdout_spearman": spearman,
        "holdout_pearson": pearson,
    }
