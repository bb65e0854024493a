"""The ensemble's per-step reward as a numpy forward pass, for the policy's inner loop.

A policy asks for the reward of one step at a time, 10 000 times per iteration and more. Through torch each
call costs ~0.16 ms (tensor creation, dispatcher, three small modules, a copy back), far more than the
arithmetic of three 64-64 MLPs on one row. Here the members' weights are exported once as stacked float32
arrays and a step is a handful of ``np.matmul`` calls (~15 µs). Results equal
:meth:`RewardEnsemble.reward` / :meth:`RewardEnsemble.normalized_reward` to float32 rounding (the BLAS kernels
may sum in another order; ``tests/unit/test_numpy_reward.py`` holds them to each other).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.special import erf

from trainer.core.reward.network import RewardEnsemble

# Rows per forward pass: bounds the (members, rows, hidden) activations, as RewardEnsemble.reward does.
_STEPS_PER_CHUNK = 65_536
_SQRT_HALF = np.float32(np.sqrt(0.5))


def _relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0, out=values)


def _leaky_relu(values: np.ndarray) -> np.ndarray:
    # torch's default negative slope.
    return np.where(values >= 0.0, values, values * np.float32(0.01))


def _gelu(values: np.ndarray) -> np.ndarray:
    # torch's exact (erf) GELU, not the tanh approximation.
    return (values * np.float32(0.5) * (np.float32(1.0) + erf(values * _SQRT_HALF))).astype(np.float32)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "tanh": np.tanh,
    "leaky_relu": _leaky_relu,
    "gelu": _gelu,
}


class NumpyReward:
    """:meth:`RewardEnsemble.reward` (``normalized=False``) or :meth:`RewardEnsemble.normalized_reward` as a
    plain function of float32 features (..., D) -> (...), with the weights copied out of the ensemble (later
    changes to the ensemble don't reach it)."""

    def __init__(self, ensemble: RewardEnsemble, *, normalized: bool) -> None:
        if ensemble.config.activation not in _ACTIVATIONS:
            raise ValueError(f"no numpy activation {ensemble.config.activation!r}")
        self._activation = _ACTIVATIONS[ensemble.config.activation]
        self._dim = ensemble.layout.feature_dim
        stats = ensemble.feature_stats()
        self._feature_mean, self._feature_std = stats.mean.astype(np.float32), stats.std.astype(np.float32)
        # Layer l of every member stacked: weights transposed to (M, in, out), biases (M, 1, out), so one
        # batched matmul runs all members at once.
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        linears = [[m for m in member.modules() if isinstance(m, torch.nn.Linear)] for member in ensemble.members]
        for depth in range(len(linears[0])):
            weights = np.stack([_array(member[depth].weight).T for member in linears])
            biases = np.stack([_array(member[depth].bias)[np.newaxis] for member in linears])
            self._layers.append((np.ascontiguousarray(weights), biases))
        reward_stats = ensemble.reward_stats()
        self._normalized = normalized
        self._reward_mean, self._reward_std = reward_stats.mean, reward_stats.std

    def __call__(self, features: np.ndarray) -> np.ndarray:
        array = np.asarray(features, dtype=np.float32)
        if array.shape[-1:] != (self._dim,):
            raise ValueError(f"features must end in dimension {self._dim}, got {array.shape}")
        steps = array.reshape(-1, self._dim)
        rewards = np.empty(steps.shape[0], dtype=np.float32)
        for start in range(0, steps.shape[0], _STEPS_PER_CHUNK):
            rewards[start : start + _STEPS_PER_CHUNK] = self._forward(steps[start : start + _STEPS_PER_CHUNK])
        rewards = rewards.reshape(array.shape[:-1])  # type: ignore[assignment]  # () for one step
        if self._normalized:
            # The same float32 arithmetic as RewardEnsemble.normalized_reward.
            return ((rewards - self._reward_mean) / self._reward_std).astype(np.float32)
        return rewards

    def _forward(self, steps: np.ndarray) -> np.ndarray:
        hidden = ((steps - self._feature_mean) / self._feature_std)[np.newaxis]  # (1, N, D), broadcast to M
        last = len(self._layers) - 1
        for depth, (weights, biases) in enumerate(self._layers):
            hidden = np.matmul(hidden, weights) + biases
            if depth < last:
                hidden = self._activation(hidden)
        return hidden[..., 0].mean(axis=0, dtype=np.float32)  # (M, N, 1) -> (N,)


def _array(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().to("cpu", torch.float32).numpy().copy()


def numpy_reward_fn(ensemble: RewardEnsemble, *, normalized: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The ensemble's per-step reward computed with numpy where its activation allows, else through torch."""
    if ensemble.config.activation in _ACTIVATIONS:
        return NumpyReward(ensemble, normalized=normalized)
    return ensemble.normalized_reward if normalized else ensemble.reward
