"""Held-out clips: never seen in training, so the correlation with the true return on them measures how the
reward generalises to new behaviour, not how well it fits the clips it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.core.reward.metrics import pairwise_accuracy, return_correlations
from trainer.core.reward.network import RewardEnsemble


def holdout_mask(
    n_clips: int, fraction: float, rng: np.random.Generator, *, protected: np.ndarray | None = None
) -> np.ndarray:
    """A boolean mask over ``n_clips`` holding out ``round(fraction * n_clips)`` clips (none if that is under 3).

    ``protected`` (a boolean mask) marks clips that may not be held out: clips a person labelled. Holding a clip
    out drops every pair that touches it, and with 10 % of the clips that is about 19 % of the pairs
    (bench/README.md, issue 13): a fair price for a metric on thousands of HERON pairs, a costly one on a few
    dozen human labels, which are the scarce input of the loop. Held-out clips are drawn among the others, and
    the count is ``fraction`` of the clips that may be held out.
    """
    if not 0.0 <= fraction < 0.9:
        raise ValueError("holdout_clip_fraction must be in [0, 0.9)")
    mask = np.zeros(n_clips, dtype=bool)
    candidates = np.arange(n_clips) if protected is None else np.flatnonzero(~np.asarray(protected, dtype=bool))
    count = round(fraction * len(candidates))
    if count >= 3:
        # rng.choice of an arange draws exactly as rng.choice(n): unprotected sets keep their old split.
        mask[rng.choice(candidates, size=count, replace=False)] = True
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
