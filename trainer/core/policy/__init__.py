"""Policy-training core: train Stable-Baselines3 policies on a learned reward and evaluate them.

Plain SB3/torch/numpy, no Django: the caller passes an environment factory and a reward function,
and stores the returned snapshot bytes wherever it likes.

Modules, one job each: ``config`` (hyper-parameters), ``reward_wrapper`` (the Gymnasium wrapper
that swaps in the learned reward, and the feature layout it shares with the reward model),
``replay`` (replay buffers as ``.npz`` bytes, relabelling with a new reward), ``training``
(training, continuing from and safely loading snapshots), ``evaluation`` (true vs learned returns),
``rollout_policy`` (a trained policy as a rollout :class:`trainer.core.scripted.Policy`).
"""

from trainer.core.policy.config import ALGORITHMS, PolicyConfig
from trainer.core.policy.evaluation import EvaluationResult, env_action, evaluate_policy
from trainer.core.policy.replay import (
    REPLAY_FORMAT_VERSION,
    relabel,
    replay_buffer_to_bytes,
    restore_replay_buffer,
)
from trainer.core.policy.reward_wrapper import (
    LearnedRewardWrapper,
    RewardFn,
    ensemble_reward_fn,
    feature_dim,
    features_of,
)
from trainer.core.policy.rollout_policy import SB3Policy
from trainer.core.policy.training import PolicySnapshot, load_model, train_policy

__all__ = [
    "ALGORITHMS",
    "REPLAY_FORMAT_VERSION",
    "EvaluationResult",
    "LearnedRewardWrapper",
    "PolicyConfig",
    "PolicySnapshot",
    "RewardFn",
    "SB3Policy",
    "ensemble_reward_fn",
    "env_action",
    "evaluate_policy",
    "feature_dim",
    "features_of",
    "load_model",
    "relabel",
    "replay_buffer_to_bytes",
    "restore_replay_buffer",
    "train_policy",
]
