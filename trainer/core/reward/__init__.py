"""Reward-model core: learn a per-step reward from pairwise clip preferences (design §4).

Plain torch/numpy, no Django: the caller builds arrays (clip features, labelled pairs), calls
:func:`train_reward_model`, and stores the checkpoint bytes wherever it likes.

Modules, one job each: ``config`` (hyper-parameters), ``data`` (dataset, split, bootstrap),
``network`` (the ensemble and its inference API), ``loss`` (Bradley-Terry), ``train`` (training
loop), ``metrics`` (accuracy, correlations), ``normalization`` (statistics), ``checkpoint``
(safetensors + JSON), ``holdout`` (held-out clips and their metrics).
"""

from trainer.core.reward.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointBytes,
    CheckpointError,
    CheckpointMetadata,
    CheckpointPaths,
    LoadedCheckpoint,
    from_bytes,
    load_checkpoint,
    save_checkpoint,
    to_bytes,
    weights_from_bytes,
    weights_to_bytes,
)
from trainer.core.reward.config import RewardModelConfig
from trainer.core.reward.data import FeatureLayout, PreferenceDataset, bootstrap_resample, split_pairs
from trainer.core.reward.holdout import holdout_mask, holdout_metrics
from trainer.core.reward.loss import BradleyTerryLoss, PreferenceLoss, apply_label_noise
from trainer.core.reward.metrics import pairwise_accuracy, return_correlations
from trainer.core.reward.network import RewardEnsemble, StepRewardMLP
from trainer.core.reward.normalization import MeanStd, RunningNormalizer
from trainer.core.reward.train import (
    EpochMetrics,
    TrainingResult,
    effective_batch_size,
    member_threads,
    scheduled_updates,
    train_reward_model,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "BradleyTerryLoss",
    "CheckpointBytes",
    "CheckpointError",
    "CheckpointMetadata",
    "CheckpointPaths",
    "EpochMetrics",
    "FeatureLayout",
    "LoadedCheckpoint",
    "MeanStd",
    "PreferenceDataset",
    "PreferenceLoss",
    "RewardEnsemble",
    "RewardModelConfig",
    "RunningNormalizer",
    "StepRewardMLP",
    "TrainingResult",
    "apply_label_noise",
    "bootstrap_resample",
    "effective_batch_size",
    "from_bytes",
    "holdout_mask",
    "holdout_metrics",
    "load_checkpoint",
    "member_threads",
    "pairwise_accuracy",
    "return_correlations",
    "save_checkpoint",
    "scheduled_updates",
    "split_pairs",
    "to_bytes",
    "train_reward_model",
    "weights_from_bytes",
    "weights_to_bytes",
]
