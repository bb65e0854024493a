"""Preference data as plain arrays: clips' per-step features plus labelled pairs of clip indices.

The caller (Django/Celery side) builds the arrays; nothing here knows about the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FeatureLayout:
    """What the D columns of the per-step features mean, stored in checkpoints so a policy-side
    consumer can build the same features (x_t = [obs_t, action_t, factor values...])."""

    feature_dim: int
    """D, the number of columns."""
    obs_dim: int | None = None
    """Leading columns that are the observation, if known."""
    action_dim: int | None = None
    """Columns after the observation that are the action, if known."""
    factor_names: tuple[str, ...] = ()
    """Names of the trailing columns that are HERON factor values, in column order."""
    feature_names: tuple[str, ...] | None = None
    """Optional name of every column (length D)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor_names", tuple(self.factor_names))
        if self.feature_names is not None:
            object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.feature_names is not None and len(self.feature_names) != self.feature_dim:
            raise ValueError(f"feature_names has {len(self.feature_names)} names but feature_dim is {self.feature_dim}")
        if self.obs_dim is not None and self.action_dim is not None:
            described = self.obs_dim + self.action_dim + len(self.factor_names)
            if described != self.feature_dim:
                raise ValueError(
                    f"obs_dim ({self.obs_dim}) + action_dim ({self.action_dim}) + "
                    f"{len(self.factor_names)} factor(s) = {described}, but feature_dim is {self.feature_dim}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_dim": self.feature_dim,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "factor_names": list(self.factor_names),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureLayout:
        known = {"feature_dim", "obs_dim", "action_dim", "factor_names", "feature_names"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FeatureLayout field(s) {unknown}")
        names = data.get("feature_names")
        return cls(
            feature_dim=int(data["feature_dim"]),
            obs_dim=data.get("obs_dim"),
            action_dim=data.get("action_dim"),
            factor_names=tuple(data.get("factor_names", ())),
            feature_names=None if names is None else tuple(names),
        )


@dataclass(frozen=True)
class PreferenceDataset:
    """Clips and labelled comparisons between them.

    - ``clip_features``: float32 (n_clips, T, D); every clip of a project has the same length T.
    - ``pairs``: int64 (n_pairs, 2) of clip indices (a, b).
    - ``targets``: float32 (n_pairs,) in [0, 1], the probability that clip a is preferred to b
      (1 = a better, 0 = b better, 0.5 = equally good, anything between = soft label).
    - ``weights``: float32 (n_pairs,) >= 0, how much each pair counts in the loss (e.g. labeller
      reliability); 0 removes a pair from the loss entirely.

    Arrays are converted to those dtypes (contiguous) and checked on construction.
    """

    clip_features: np.ndarray
    pairs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float32))
    layout: FeatureLayout | None = None
    """Column meaning; defaults to an anonymous layout of D columns."""

    def __post_init__(self) -> None:
        features = np.ascontiguousarray(self.clip_features, dtype=np.float32)
        pairs = np.ascontiguousarray(self.pairs, dtype=np.int64)
        targets = np.ascontiguousarray(self.targets, dtype=np.float32).reshape(-1)
        weights = np.asarray(self.weights, dtype=np.float32).reshape(-1)
        if weights.size == 0 and targets.size != 0:
            weights = np.ones_like(targets)
        weights = np.ascontiguousarray(weights)

        if features.ndim != 3 or 0 in features.shape:
            raise ValueError(f"clip_features must have shape (n_clips, T, D) with all sizes > 0, got {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("clip_features contains NaN or infinite values")
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape (n_pairs, 2), got {pairs.shape}")
        if pairs.shape[0] == 0:
            raise ValueError("the dataset has no pairs")
        if pairs.min() < 0 or pairs.max() >= features.shape[0]:
            raise ValueError(f"pairs refer to clips outside [0, {features.shape[0]})")
        if targets.shape != (pairs.shape[0],):
            raise ValueError(f"targets must have shape ({pairs.shape[0]},), got {targets.shape}")
        if not (np.isfinite(targets).all() and (targets >= 0).all() and (targets <= 1).all()):
            raise ValueError("targets must be probabilities in [0, 1]")
        if weights.shape != (pairs.shape[0],):
            raise ValueError(f"weights must have shape ({pairs.shape[0]},), got {weights.shape}")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError("weights must be finite and >= 0")

        layout = self.layout if self.layout is not None else FeatureLayout(feature_dim=features.shape[2])
        if layout.feature_dim != features.shape[2]:
            raise ValueError(
                f"layout describes {layout.feature_dim} features but clip_features has {features.shape[2]}"
            )

        object.__setattr__(self, "clip_features", features)
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "layout", layout)

    @property
    def n_clips(self) -> int:
        return int(self.clip_features.shape[0])

    @property
    def clip_length(self) -> int:
        return int(self.clip_features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.clip_features.shape[2])

    @property
    def n_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def feature_layout(self) -> FeatureLayout:
        assert self.layout is not None  # always set by __post_init__
        return self.layout

    def subset(self, pair_indices: np.ndarray | Sequence[int]) -> PreferenceDataset:
        """The same clips with only the selected pairs (indices may repeat, as in a bootstrap)."""
        index = np.asarray(pair_indices, dtype=np.int64)
        return PreferenceDataset(
            self.clip_features, self.pairs[index], self.targets[index], self.weights[index], self.layout
        )


def split_pairs(n_pairs: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of pair indices, both returned sorted.

    The validation set gets round(val_fraction * n_pairs) pairs, at least one when val_fraction > 0,
    but the training set always keeps at least one pair.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * n_pairs)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n_pairs - 1)
    permutation = rng.permutation(n_pairs)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


def bootstrap_resample(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw len(indices) indices with replacement (the classic bootstrap)."""
    return np.asarray(indices)[rng.integers(0, len(indices), size=len(indices))]


def clips_in_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sorted unique clip indices referenced by some pair."""
    return np.unique(np.asarray(pairs).reshape(-1))
