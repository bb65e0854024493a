"""Evaluation metrics of a reward model: pair accuracy and agreement with known true returns."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.core.reward.data import clips_in_pairs

# Below this many held-out clips with a known true return, correlations are too noisy to mean
# anything, so they are computed over every clip with a known true return instead.
MIN_CLIPS_FOR_HELD_OUT_CORRELATION = 10


def pairwise_accuracy(return_diff: np.ndarray, targets: np.ndarray) -> float:
    """Share of decided pairs (target ≠ 0.5) where the model prefers the labelled clip, i.e.
    (R_a - R_b > 0) == (target > 0.5). A predicted tie counts as wrong. NaN if no decided pair."""
    return_diff = np.asarray(return_diff)
    targets = np.asarray(targets)
    decided = targets != 0.5
    if not decided.any():
        return float("nan")
    return float(np.mean((return_diff[decided] > 0) == (targets[decided] > 0.5)))


@dataclass(frozen=True)
class ReturnCorrelation:
    spearman: float
    pearson: float
    n_clips: int
    clip_set: str
    """``held_out`` (clips in validation pairs) or ``all`` (fallback when too few held-out clips)."""


def return_correlations(predicted: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson) between predicted and true returns, ignoring NaN true returns.

    NaN when fewer than 3 clips are known or either side is constant.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    known = np.isfinite(true) & np.isfinite(predicted)
    predicted, true = predicted[known], true[known]
    if predicted.size < 3 or np.ptp(predicted) == 0 or np.ptp(true) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = float(stats.spearmanr(predicted, true).statistic)
        pearson = float(stats.pearsonr(predicted, true).statistic)
    return spearman, pearson


def correlation_clip_indices(
    true_returns: np.ndarray, val_pairs: np.ndarray, minimum: int = MIN_CLIPS_FOR_HELD_OUT_CORRELATION
) -> tuple[np.ndarray, str]:
    """Clips to correlate over: those in validation pairs with a known true return, or every clip
    with a known true return when that leaves fewer than ``minimum``."""
    known = np.isfinite(np.asarray(true_returns, dtype=np.float64))
    held_out = clips_in_pairs(val_pairs) if len(val_pairs) else np.zeros(0, dtype=np.int64)
    held_out = held_out[known[held_out]]
    if held_out.size >= minimum:
        return held_out, "held_out"
    return np.flatnonzero(known), "all"


def evaluate_return_correlation(
    predicted_returns: np.ndarray, true_returns: np.ndarray, val_pairs: np.ndarray
) -> ReturnCorrelation:
    """Spearman/Pearson of predicted vs true clip returns on the held-out clips (see
    :func:`correlation_clip_indices`); ``predicted_returns`` covers all clips."""
    clips, clip_set = correlation_clip_indices(true_returns, val_pairs)
    spearman, pearson = return_correlations(np.asarray(predicted_returns)[clips], np.asarray(true_returns)[clips])
    return ReturnCorrelation(spearman, pearson, int(clips.size), clip_set)
