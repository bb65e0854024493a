"""The preference model: an ensemble of per-step reward MLPs whose sums over a clip are scores.

r_m(x_t) is member m's reward for one step; a clip's score (return) is R_m = Σ_t r_m(x_t); the
reward handed to a policy is the ensemble mean, and the members' spread of P(a≻b) is the model's
uncertainty about a comparison.

Tensor-level methods (``member_returns`` ...) are for training; the array-level methods
(``predict_returns``, ``preference_probability``, ``disagreement``, ``normalized_reward`` ...)
take numpy arrays or tensors, run without gradients in float32, and return numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from trainer.core.reward.config import RewardModelConfig
from trainer.core.reward.data import FeatureLayout
from trainer.core.reward.normalization import MeanStd

ArrayLike = np.ndarray | torch.Tensor

# Steps per forward pass in ``RewardEnsemble.reward``: bounds activation memory (~130 MB with
# 256 hidden units); no effect on results.
_STEPS_PER_CHUNK = 65_536


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "leaky_relu":
        return nn.LeakyReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}")


def _linear(in_features: int, out_features: int, generator: torch.Generator | None) -> nn.Linear:
    """nn.Linear with PyTorch's default initialisation, drawn from ``generator``.

    ``skip_init`` avoids the constructor's own draw from the *global* RNG, so building a model
    neither depends on nor disturbs global random state.
    """
    layer = torch.nn.utils.skip_init(nn.Linear, in_features, out_features)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


class StepRewardMLP(nn.Module):
    """Per-step reward r(x): features (..., D) -> rewards (...)."""

    def __init__(
        self,
        input_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_sizes:
            layers += [_linear(width, hidden, generator), _activation(activation)]
            width = hidden
        layers.append(_linear(width, 1, generator))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


def clip_returns(step_reward: nn.Module, clip_features: torch.Tensor) -> torch.Tensor:
    """R = Σ_t r(x_t) for (N, T, D) clips in one pass over all N·T steps -> (N,) float32.

    The sum runs in float32 even when the MLP ran under bfloat16 autocast.
    """
    return step_reward(clip_features).float().sum(dim=-1)


class RewardEnsemble(nn.Module):
    """M independently initialised :class:`StepRewardMLP` members plus the statistics needed to
    use them: input feature normalisation and the normalisation of the output reward."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    reward_mean: torch.Tensor
    reward_std: torch.Tensor

    def __init__(
        self,
        config: RewardModelConfig,
        layout: FeatureLayout,
        *,
        feature_stats: MeanStd | None = None,
        reward_stats: MeanStd | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """``generators`` (one per member) drive the initialisation; by default they are derived
        from ``config.seed`` (distinct per member), never from the global RNG."""
        super().__init__()
        if generators is None:
            generators = [
                torch.Generator().manual_seed(int(child.generate_state(1, np.uint64)[0]) >> 1)
                for child in np.random.SeedSequence(config.seed).spawn(config.ensemble_size)
            ]
        if len(generators) != config.ensemble_size:
            raise ValueError(f"need {config.ensemble_size} generators, got {len(generators)}")
        self.config = config
        self.layout = layout
        self.members = nn.ModuleList(
            StepRewardMLP(
                layout.feature_dim,
                config.hidden_sizes,
                config.activation,
                generator,
            )
            for generator in generators
        )
        # Statistics are non-persistent buffers: they move with .to(device) but live in the
        # checkpoint's JSON metadata, not in the weights file (one source of truth each).
        feature_stats = feature_stats or MeanStd.identity((layout.feature_dim,))
        reward_stats = reward_stats or MeanStd.identity()
        self.register_buffer("feature_mean", torch.zeros(layout.feature_dim), persistent=False)
        self.register_buffer("feature_std", torch.ones(layout.feature_dim), persistent=False)
        self.register_buffer("reward_mean", torch.zeros(()), persistent=False)
        self.register_buffer("reward_std", torch.ones(()), persistent=False)
        self.set_feature_stats(feature_stats)
        self.set_reward_stats(reward_stats)

    # --- statistics ----------------------------------------------------------------------------
    @property
    def ensemble_size(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    def set_feature_stats(self, stats: MeanStd) -> None:
        if stats.mean.shape != (self.layout.feature_dim,) or stats.std.shape != (self.layout.feature_dim,):
            raise ValueError(f"feature statistics must have shape ({self.layout.feature_dim},)")
        self.feature_mean.copy_(torch.from_numpy(np.asarray(stats.mean, dtype=np.float32)))
        self.feature_std.copy_(torch.from_numpy(np.asarray(stats.std, dtype=np.float32)))

    def feature_stats(self) -> MeanStd:
        return MeanStd(self.feature_mean.cpu().numpy().copy(), self.feature_std.cpu().numpy().copy())

    def set_reward_stats(self, stats: MeanStd) -> None:
        self.reward_mean.fill_(float(stats.mean))
        self.reward_std.fill_(float(stats.std))

    def reward_stats(self) -> MeanStd:
        return MeanStd(self.reward_mean.cpu().numpy().copy(), self.reward_std.cpu().numpy().copy())

    # --- tensor level (training) ---------------------------------------------------------------
    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features (..., D) -> standardised features, as the members see them."""
        return (features - self.feature_mean) / self.feature_std

    def member_returns(self, clip_features: torch.Tensor) -> torch.Tensor:
        """Raw (N, T, D) clips -> (M, N) returns, one row per member."""
        normalized = self.normalize_features(clip_features)
        return torch.stack([clip_returns(member, normalized) for member in self.members])

    def member_step_rewards(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features (..., D) -> (M, ...) per-step rewards of each member."""
        normalized = self.normalize_features(features)
        return torch.stack([member(normalized) for member in self.members])

    def forward(self, clip_features: torch.Tensor) -> torch.Tensor:
        return self.member_returns(clip_features)

    # --- array level (inference) ---------------------------------------------------------------
    def _as_tensor(self, values: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32).to(self.device)

    def _chunks(self, clip_features: ArrayLike) -> Iterator[torch.Tensor]:
        tensor = self._as_tensor(clip_features)
        expected_dim = self.layout.feature_dim
        if tensor.ndim != 3 or tensor.shape[-1] != expected_dim:
            shape = tuple(tensor.shape)
            raise ValueError(f"clip_features must have shape (n_clips, T, {expected_dim}), got {shape}")
        step = self.config.eval_batch_clips
        for start in range(0, tensor.shape[0], step):
            yield tensor[start : start + step]

    @torch.no_grad()
    def predict_member_returns(self, clip_features: ArrayLike) -> np.ndarray:
        """(n_clips, T, D) -> (M, n_clips) float32 returns of every member."""
        parts = [self.member_returns(chunk) for chunk in self._chunks(clip_features)]
        if not parts:
            return np.zeros((self.ensemble_size, 0), dtype=np.float32)
        return torch.cat(parts, dim=1).cpu().numpy()

    def predict_returns(self, clip_features: ArrayLike) -> np.ndarray:
        """(n_clips, T, D) -> (n_clips,) ensemble-mean returns R (un-normalised)."""
        return self.predict_member_returns(clip_features).mean(axis=0)

    @torch.no_grad()
    def reward(self, features: ArrayLike) -> np.ndarray:
        """Ensemble-mean per-step reward r(x) for features of shape (..., D) -> shape (...)."""
        tensor = self._as_tensor(features)
        if tensor.shape[-1:] != (self.layout.feature_dim,):
            raise ValueError(f"features must end in dimension {self.layout.feature_dim}, got {tuple(tensor.shape)}")
        steps = tensor.reshape(-1, self.layout.feature_dim)
        rewards = [self.member_step_rewards(chunk).mean(dim=0) for chunk in steps.split(_STEPS_PER_CHUNK)]
        if not rewards:
            return np.zeros(tensor.shape[:-1], dtype=np.float32)
        return torch.cat(rewards).reshape(tensor.shape[:-1]).cpu().numpy()

    def normalized_reward(self, features: ArrayLike) -> np.ndarray:
        """(r(x) - mean) / std with the per-step reward statistics of the training clips: the
        reward to give a policy (roughly zero-mean, unit-scale whatever the ensemble's scale)."""
        stats = self.reward_stats()
        return ((self.reward(features) - stats.mean) / stats.std).astype(np.float32)

    def preference_probability(self, features_a: ArrayLike, features_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """P(a≻b) = sigmoid(R_a - R_b) per member -> (mean, std) over members.

        Accepts one clip each, (T, D) -> arrays of shape (), or aligned batches (N, T, D) -> (N,).
        The std is the population std (0 for a single member).
        """
        a = self._as_tensor(features_a)
        b = self._as_tensor(features_b)
        if a.shape != b.shape:
            raise ValueError(f"features_a {tuple(a.shape)} and features_b {tuple(b.shape)} differ in shape")
        single = a.ndim == 2
        if single:
            a, b = a.unsqueeze(0), b.unsqueeze(0)
        member_probabilities = _sigmoid(self.predict_member_returns(a) - self.predict_member_returns(b))
        mean, std = member_probabilities.mean(axis=0), member_probabilities.std(axis=0)
        if single:
            return mean[0], std[0]
        return mean, std

    def pair_preference_probabilities(
        self, clip_features: ArrayLike, pairs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For pairs (n, 2) of indices into clip_features: (mean, std) over members of P(a≻b).

        Each referenced clip is scored once, however many pairs it appears in.
        """
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        clips, inverse = np.unique(pairs.reshape(-1), return_inverse=True)
        # Select before converting, so only the referenced clips travel to the device.
        if isinstance(clip_features, torch.Tensor):
            referenced: ArrayLike = clip_features[torch.from_numpy(clips).to(clip_features.device)]
        else:
            referenced = np.asarray(clip_features)[clips]
        returns = self.predict_member_returns(referenced)[:, inverse.reshape(-1, 2)]  # (M, n, 2)
        member_probabilities = _sigmoid(returns[:, :, 0] - returns[:, :, 1])
        return member_probabilities.mean(axis=0), member_probabilities.std(axis=0)

    def disagreement(self, clip_features: ArrayLike, pairs: np.ndarray) -> np.ndarray:
        """Std over members of P(a≻b) for each pair (n,): the ensemble's uncertainty, for active
        query selection (ask about the most uncertain pairs)."""
        return self.pair_preference_probabilities(clip_features, pairs)[1]


def _sigmoid(values: np.ndarray) -> np.ndarray:
    # Via torch for a numerically stable sigmoid on large |values| without overflow warnings.
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))).numpy()
