"""Reward-model inputs for a batch of clips: per-step ``[obs_t, action_t]`` features, stacked.

The Django side (``trainer.reward_training.clip_features``) loads each clip's rollout from storage once and
hands the loaded rollouts here; everything below is plain numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from trainer.core.reward.data import FeatureLayout
from trainer.core.rollouts import RolloutData, Segment, segment_features

Key = TypeVar("Key", bound=Hashable)


def check_same_length(lengths: Sequence[int]) -> None:
    """Clips of one reward-model batch share one length T; raise ValueError otherwise."""
    distinct = set(lengths)
    if len(distinct) != 1:
        raise ValueError(f"clips of different lengths cannot share a reward model batch: {sorted(distinct)}")


def stack_clip_features(
    rollouts: Mapping[Key, RolloutData], clips: Sequence[tuple[Key, Segment]]
) -> tuple[np.ndarray, FeatureLayout]:
    """Features of each clip ``(rollout key, segment)``, shape (n_clips, T, O + A) float32, and their layout."""
    check_same_length([segment.length for _, segment in clips])
    features = [segment_features(rollouts[key], segment) for key, segment in clips]
    stacked = np.stack(features).astype(np.float32)
    first = rollouts[clips[0][0]]
    obs_dim = first.observations.shape[1]
    action_dim = first.discrete_actions or first.actions.shape[1]
    layout = FeatureLayout(feature_dim=stacked.shape[2], obs_dim=obs_dim, action_dim=action_dim)
    return stacked, layout
