"""Mean/std statistics: of input features, of the learned reward, and a running version for policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Standard deviations below this are treated as "constant" and replaced by 1, so a feature that
# never varies in the training clips (or a reward model that outputs a constant) isn't blown up.
MIN_STD = 1e-6


@dataclass(frozen=True)
class MeanStd:
    """Per-dimension (or scalar) mean and standard deviation used as (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, axis: int | tuple[int, ...] | None) -> MeanStd:
        """Statistics of ``values`` over ``axis`` in float64, stored as float32 with a floored std."""
        values64 = np.asarray(values, dtype=np.float64)
        mean = values64.mean(axis=axis)
        std = values64.std(axis=axis)
        std = np.where(std < MIN_STD, 1.0, std)
        return cls(np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))

    @classmethod
    def identity(cls, shape: tuple[int, ...] = ()) -> MeanStd:
        return cls(np.zeros(shape, dtype=np.float32), np.ones(shape, dtype=np.float32))

    def to_dict(self) -> dict[str, Any]:
        # float32 -> Python float (double) -> JSON -> float32 is exact, so checkpoints reproduce
        # predictions bit for bit.
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeanStd:
        return cls(np.asarray(data["mean"], dtype=np.float32), np.asarray(data["std"], dtype=np.float32))


class RunningNormalizer:
    """Streaming mean/variance (Chan et al. parallel update) for normalising rewards or observations
    seen by a policy, where the data arrives in batches.

    ``shape`` is the shape of one sample; batches have shape (batch, *shape).
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-8) -> None:
        self.shape = tuple(shape)
        self.epsilon = epsilon
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.var = np.ones(self.shape, dtype=np.float64)
        self.count = 0

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape((-1, *self.shape))
        if batch.shape[0] == 0:
            return
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        batch_count = batch.shape[0]
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, batch_count
            return
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * batch_count / total
        combined_m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = combined_m2 / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + self.epsilon)

    def normalize(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "epsilon": self.epsilon,
            "mean": np.asarray(self.mean).tolist(),
            "var": np.asarray(self.var).tolist(),
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunningNormalizer:
        normalizer = cls(tuple(data["shape"]), float(data["epsilon"]))
        normalizer.mean = np.asarray(data["mean"], dtype=np.float64).reshape(normalizer.shape)
        normalizer.var = np.asarray(data["var"], dtype=np.float64).reshape(normalizer.shape)
        normalizer.count = int(data["count"])
        return normalizer
