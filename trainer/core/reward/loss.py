"""Preference losses: how clip scores and labels become a scalar to minimise.

Any callable with the :class:`PreferenceLoss` signature can replace the Bradley-Terry loss in
:func:`trainer.core.reward.train.train_reward_model`.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class PreferenceLoss(Protocol):
    def __call__(
        self, returns_a: torch.Tensor, returns_b: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss for a batch; all inputs have shape (batch,)."""
        ...


def apply_label_noise(probability: np.ndarray | float, label_noise: float) -> np.ndarray:
    """P' = ε/2 + (1-ε)·P: the answer is random with probability ε, else follows the model."""
    return label_noise / 2 + (1 - label_noise) * np.asarray(probability, dtype=np.float64)


def preference_log_probabilities(
    return_diff: torch.Tensor, label_noise: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log P'(a≻b) and log P'(b≻a) for return differences R_a - R_b, computed stably.

    With noise ε: log(ε/2 + (1-ε)·sigmoid(d)) = logaddexp(log(ε/2), log(1-ε) + logsigmoid(d)),
    which stays finite and has useful gradients even for |d| in the hundreds.
    """
    log_p_a = F.logsigmoid(return_diff)
    log_p_b = F.logsigmoid(-return_diff)
    if label_noise == 0.0:
        return log_p_a, log_p_b
    log_half_noise = torch.tensor(math.log(label_noise / 2), dtype=return_diff.dtype, device=return_diff.device)
    log_keep = math.log1p(-label_noise)
    return torch.logaddexp(log_half_noise, log_p_a + log_keep), torch.logaddexp(log_half_noise, log_p_b + log_keep)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·v / Σ w: a zero-weight element changes neither sum, so it has no effect at all.

    A batch whose weights are all zero gives 0 (with zero gradient) rather than NaN.
    """
    return (weights * values).sum() / weights.sum().clamp_min(torch.finfo(values.dtype).tiny)


class BradleyTerryLoss:
    """Weighted cross-entropy between soft targets y = P_label(a≻b) and the Bradley-Terry
    probability P(a≻b) = sigmoid(R_a - R_b), optionally mixed with uniform label noise ε.

    loss = Σ_i w_i · -(y_i log P'_i + (1 - y_i) log(1 - P'_i)) / Σ_i w_i
    """

    def __init__(self, label_noise: float = 0.0) -> None:
        if not 0.0 <= label_noise < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
        self.label_noise = label_noise

    def per_pair(self, returns_a: torch.Tensor, returns_b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Unweighted cross-entropy of every pair, shape (batch,)."""
        log_p_a, log_p_b = preference_log_probabilities(returns_a - returns_b, self.label_noise)
        return -(targets * log_p_a + (1 - targets) * log_p_b)

    def __call__(
        self, returns_a: torch.Tensor, returns_b: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return weighted_mean(self.per_pair(returns_a, returns_b, targets), weights)

    def __repr__(self) -> str:
        return f"BradleyTerryLoss(label_noise={self.label_noise})"
