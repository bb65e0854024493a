"""Training loop: bootstrapped ensemble, Bradley-Terry loss, validation early stopping.

Reproducibility: every random choice (split, bootstrap, initialisation, shuffling) comes from the
config seed (or an explicit ``rng``), through per-member ``torch.Generator`` objects on the CPU, so
results never depend on - and training never disturbs - the global RNGs; on the same machine with
the same thread count two runs give bitwise-identical weights.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.core.reward.config import MAX_EPOCHS, RewardModelConfig
from trainer.core.reward.data import PreferenceDataset, bootstrap_resample, clips_in_pairs, split_pairs
from trainer.core.reward.loss import BradleyTerryLoss, PreferenceLoss
from trainer.core.reward.metrics import evaluate_return_correlation, pairwise_accuracy
from trainer.core.reward.network import RewardEnsemble, clip_returns
from trainer.core.reward.normalization import MeanStd

ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class EpochMetrics:
    """One row of the training history. Train figures are averaged over the epoch's batches and
    over members (each on its own bootstrap sample); validation figures are those of the ensemble
    reward (mean return over members) at the end of the epoch, NaN without a validation set."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    member_val_losses: tuple[float, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["member_val_losses"] = list(self.member_val_losses)
        return data


@dataclass
class TrainingResult:
    model: RewardEnsemble
    """The ensemble with the best (lowest validation loss) weights, on the training device, in
    eval mode, with feature and reward normalisation statistics set."""
    history: list[EpochMetrics]
    metrics: dict[str, Any]
    """Summary figures (JSON-friendly; NaN where undefined), stored in checkpoints."""
    train_pair_indices: np.ndarray = field(repr=False)
    val_pair_indices: np.ndarray = field(repr=False)


class _EarlyStopping:
    """Tracks two references: the lowest loss seen, whose weights are restored at the end, and the
    last loss that beat the previous reference by more than ``min_delta``, which resets patience."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.reference_loss, self.reference_epoch = math.inf, 0
        self.stopped_early = False

    def update(self, epoch: int, loss: float, model: torch.nn.Module) -> None:
        if loss < self.best_loss:  # False for NaN: a NaN epoch is never the best
            self.best_loss, self.best_epoch = loss, epoch
            self.best_state = _clone_state(model)
        if loss < self.reference_loss - self.min_delta:
            self.reference_loss, self.reference_epoch = loss, epoch
        elif self.patience > 0 and epoch - self.reference_epoch >= self.patience:
            self.stopped_early = True

    def restore_best(self, model: torch.nn.Module) -> int | None:
        """Load the best weights into ``model`` and return their epoch; None (and the last
        weights are kept) if no epoch ever had a finite loss, e.g. a custom loss returned NaN."""
        if self.best_state is None:
            return None
        model.load_state_dict(self.best_state)
        return self.best_epoch


@dataclass(frozen=True)
class _Validation:
    """Validation pairs resolved to unique clips, so each clip is scored once per evaluation."""

    clips: torch.Tensor  # (U,) indices into the clip tensor
    pair_positions: torch.Tensor  # (n_val, 2) positions into ``clips``
    targets: torch.Tensor
    weights: torch.Tensor


def train_reward_model(
    dataset: PreferenceDataset,
    config: RewardModelConfig | None = None,
    *,
    true_returns: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    rng: np.random.Generator | None = None,
    loss_fn: PreferenceLoss | None = None,
    stats_clips: np.ndarray | None = None,
) -> TrainingResult:
    """Train a reward-model ensemble on labelled pairs of clips.

    - ``true_returns``: optional (n_clips,) true return per clip (NaN = unknown); when given,
      Spearman/Pearson of the learned returns against it are reported on held-out clips.
    - ``progress(fraction, message)`` is called once per epoch; the last call has fraction 1.0.
      An exception raised by it propagates and aborts training (a way to cancel a task).
    - ``rng`` replaces ``np.random.default_rng(config.seed)`` as the root of all randomness.
    - ``loss_fn`` replaces ``BradleyTerryLoss(config.label_noise)``; it is also the validation loss.
    - ``stats_clips``: indices of the clips whose steps set the feature and reward normalisation statistics;
      default: the clips of the training pairs. Pass every clip of the pool (labelled or not) so that a model
      trained on a few pairs is normalised on the states a policy will visit, not on a handful of clips.
    """
    config = config or RewardModelConfig()
    started = time.perf_counter()
    device = config.resolved_device()
    if true_returns is not None:
        true_returns = np.asarray(true_returns, dtype=np.float64).reshape(-1)
        if true_returns.shape != (dataset.n_clips,):
            raise ValueError(f"true_returns must have shape ({dataset.n_clips},), got {true_returns.shape}")
    seed_source = "rng" if rng is not None else "config.seed"
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    loss_fn = loss_fn if loss_fn is not None else BradleyTerryLoss(config.label_noise)

    with _torch_runtime(config, device), _member_runner(config) as member_pool:
        train_indices, val_indices = split_pairs(dataset.n_pairs, _val_fraction(config, dataset.n_pairs), rng)
        member_seeds = [int(seed) for seed in rng.integers(0, 2**63 - 1, size=config.ensemble_size)]
        train_clips = clips_in_pairs(dataset.pairs[train_indices])
        if stats_clips is not None:
            stats_clips = np.unique(np.asarray(stats_clips, dtype=np.int64))
            if stats_clips.size == 0 or stats_clips[0] < 0 or stats_clips[-1] >= dataset.n_clips:
                raise ValueError(f"stats_clips must be non-empty indices below {dataset.n_clips}")
        else:
            stats_clips = train_clips

        feature_stats = (
            MeanStd.of(dataset.clip_features[stats_clips], axis=(0, 1))
            if config.normalize_features
            else MeanStd.identity((dataset.feature_dim,))
        )
        # One CPU generator per member drives its initialisation and its shuffling; CPU generators
        # make the random streams identical whatever the training device.
        generators = [torch.Generator().manual_seed(seed) for seed in member_seeds]
        model = RewardEnsemble(config, dataset.feature_layout, feature_stats=feature_stats, generators=generators)
        model.to(device)
        member_pair_indices = [
            torch.from_numpy(
                bootstrap_resample(train_indices, np.random.default_rng(seed)) if config.bootstrap else train_indices
            )
            for seed in member_seeds
        ]

        with torch.no_grad():
            normalized_clips = model.normalize_features(torch.from_numpy(dataset.clip_features).to(device))
        pairs = torch.from_numpy(dataset.pairs).to(device)
        targets = torch.from_numpy(dataset.targets).to(device)
        weights = torch.from_numpy(dataset.weights).to(device)
        validation = _prepare_validation(dataset, val_indices, device)

        optimizers = [
            torch.optim.AdamW(member.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
            for member in model.members
        ]
        training_precision = config.resolved_training_precision(device)
        autocast_dtype = torch.bfloat16 if training_precision == "bfloat16" else None

        initial = _evaluate(model, normalized_clips, validation, loss_fn, config.eval_batch_clips)
        history: list[EpochMetrics] = []
        stopping = _EarlyStopping(config.patience, config.min_delta)

        batch_size = effective_batch_size(config, len(train_indices))
        # Few pairs make short epochs: add epochs until every member has taken min_updates gradient steps.
        batches_per_epoch = max(math.ceil(len(indices) / batch_size) for indices in member_pair_indices)
        min_epochs = min(MAX_EPOCHS, math.ceil(config.min_updates / batches_per_epoch))
        epochs = max(config.max_epochs, min_epochs)
        if validation is None and config.updates_per_pair > 0:
            # Nothing to stop on: the data size sets the length (issue 13).
            updates = scheduled_updates(config, len(train_indices))
            epochs = min_epochs = min(MAX_EPOCHS, math.ceil(updates / batches_per_epoch))
        for epoch in range(1, epochs + 1):
            epoch_started = time.perf_counter()
            model.train()
            # Each member's epoch depends only on its own weights, optimiser and generator, so the members train
            # side by side on threads (torch runs its kernels outside Python's lock); each does the same ops in the
            # same order as it would alone, so the weights are bitwise those of training them one after another.
            orders = [
                indices[torch.randperm(len(indices), generator=generator)].to(device)
                for indices, generator in zip(member_pair_indices, generators, strict=True)
            ]

            def member_epoch(member: torch.nn.Module, optimizer: torch.optim.Optimizer, order: torch.Tensor):
                return _train_member_epoch(
                    member,
                    optimizer,
                    order,
                    normalized_clips,
                    pairs,
                    targets,
                    weights,
                    loss_fn,
                    batch_size,
                    autocast_dtype,
                )

            results = list(member_pool.map(member_epoch, model.members, optimizers, orders))
            member_losses = [loss for loss, _ in results]
            member_accuracies = [accuracy for _, accuracy in results]
            model.eval()
            val_loss, val_accuracy, member_val_losses = _evaluate(
                model, normalized_clips, validation, loss_fn, config.eval_batch_clips
            )
            history.append(
                EpochMetrics(
                    epoch=epoch,
                    train_loss=float(np.mean(member_losses)),
                    train_accuracy=_nanmean(member_accuracies),
                    val_loss=val_loss,
                    val_accuracy=val_accuracy,
                    member_val_losses=member_val_losses,
                    seconds=time.perf_counter() - epoch_started,
                )
            )

            # Without validation pairs there is nothing to stop on: the last epoch is the best.
            stopping.update(epoch, val_loss if validation is not None else -epoch, model)
            finished = (stopping.stopped_early and epoch >= min_epochs) or epoch == epochs
            if progress is not None:
                progress(
                    1.0 if finished else epoch / epochs,
                    _progress_message(history[-1], config, stopping),
                )
            if finished:
                break

        best_epoch = stopping.restore_best(model) or len(history)
        stopped_early = stopping.stopped_early
        model.eval()
        model.set_reward_stats(_step_reward_stats(model, dataset.clip_features[stats_clips], config.eval_batch_clips))

        best = history[best_epoch - 1]
        metrics: dict[str, Any] = {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "stopped_early": stopped_early,
            "train_loss": best.train_loss,
            "train_accuracy": best.train_accuracy,
            "val_loss": best.val_loss,
            "val_accuracy": best.val_accuracy,
            "initial_val_loss": initial[0],
            "initial_val_accuracy": initial[1],
            "n_clips": dataset.n_clips,
            "clip_length": dataset.clip_length,
            "n_pairs": dataset.n_pairs,
            "n_train_pairs": len(train_indices),
            "n_val_pairs": len(val_indices),
            "n_train_clips": len(train_clips),
            "batch_size": batch_size,
            "member_seeds": member_seeds,
            "seed_source": seed_source,
            "device": str(device),
            "num_threads": torch.get_num_threads(),
            "training_precision": training_precision,
            "loss": repr(loss_fn),
        }
        if true_returns is not None:
            correlation = evaluate_return_correlation(
                _returns_of_all_clips(model, dataset.clip_features, true_returns),
                true_returns,
                dataset.pairs[val_indices],
            )
            metrics.update(
                spearman=correlation.spearman,
                pearson=correlation.pearson,
                correlation_clips=correlation.n_clips,
                correlation_clip_set=correlation.clip_set,
            )
        metrics["wall_time_s"] = time.perf_counter() - started
    return TrainingResult(model, history, metrics, train_indices, val_indices)


# ------------------------------------------------------------------------------------------------
def scheduled_updates(config: RewardModelConfig, n_train_pairs: int) -> int:
    """Gradient steps per member under the ``updates_per_pair`` schedule (before rounding up to whole epochs)."""
    wanted = math.ceil(config.updates_per_pair * n_train_pairs)
    return max(1, min(config.max_updates, max(config.min_updates, wanted)))


def effective_batch_size(config: RewardModelConfig, n_train_pairs: int) -> int:
    """``batch_size``, grown so that an epoch is at most ``max_batches_per_epoch`` batches when that is set."""
    if config.max_batches_per_epoch <= 0:
        return config.batch_size
    return max(config.batch_size, math.ceil(n_train_pairs / config.max_batches_per_epoch))


def _val_fraction(config: RewardModelConfig, n_pairs: int) -> float:
    """The configured split, or 0 when it would hold fewer than ``min_val_pairs`` pairs."""
    if config.val_fraction > 0 and round(config.val_fraction * n_pairs) < config.min_val_pairs:
        return 0.0
    return config.val_fraction


def _train_member_epoch(
    member: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    order: torch.Tensor,
    normalized_clips: torch.Tensor,
    pairs: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    loss_fn: PreferenceLoss,
    batch_size: int,
    autocast_dtype: torch.dtype | None,
) -> tuple[float, float]:
    """One pass over ``order`` (pair indices) in mini-batches; returns (weighted mean batch loss,
    accuracy on decided pairs) as measured on the fly."""
    device_type = normalized_clips.device.type
    loss_sum = torch.zeros((), device=normalized_clips.device)
    weight_sum = torch.zeros((), device=normalized_clips.device)
    correct = torch.zeros((), dtype=torch.int64, device=normalized_clips.device)
    decided = torch.zeros((), dtype=torch.int64, device=normalized_clips.device)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        batch_pairs, batch_targets, batch_weights = pairs[batch], targets[batch], weights[batch]
        # Score each distinct clip of the batch once: all of its steps go through the MLP in one
        # (clips * T, D) pass, and clips shared by several pairs are not recomputed.
        clips, positions = torch.unique(batch_pairs, return_inverse=True)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            returns = clip_returns(member, normalized_clips[clips])[positions]
        loss = loss_fn(returns[:, 0], returns[:, 1], batch_targets, batch_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        with torch.no_grad():
            batch_weight = batch_weights.sum()
            loss_sum += loss.detach() * batch_weight
            weight_sum += batch_weight
            is_decided = batch_targets != 0.5
            agrees = (returns[:, 0] - returns[:, 1] > 0) == (batch_targets > 0.5)
            correct += (agrees & is_decided).sum()
            decided += is_decided.sum()
    mean_loss = (loss_sum / weight_sum).item() if weight_sum.item() > 0 else math.nan
    accuracy = correct.item() / decided.item() if decided.item() > 0 else math.nan
    return mean_loss, accuracy


def _prepare_validation(
    dataset: PreferenceDataset, val_indices: np.ndarray, device: torch.device
) -> _Validation | None:
    if len(val_indices) == 0:
        return None
    clips, positions = np.unique(dataset.pairs[val_indices].reshape(-1), return_inverse=True)
    return _Validation(
        clips=torch.from_numpy(clips).to(device),
        pair_positions=torch.from_numpy(positions.reshape(-1, 2)).to(device),
        targets=torch.from_numpy(dataset.targets[val_indices]).to(device),
        weights=torch.from_numpy(dataset.weights[val_indices]).to(device),
    )


@torch.no_grad()
def _evaluate(
    model: RewardEnsemble,
    normalized_clips: torch.Tensor,
    validation: _Validation | None,
    loss_fn: PreferenceLoss,
    chunk_clips: int,
) -> tuple[float, float, tuple[float, ...]]:
    """(loss, accuracy) of the ensemble reward - the mean return over members - on the
    validation pairs, plus each member's own validation loss."""
    if validation is None:
        return math.nan, math.nan, ()
    member_returns = torch.cat(
        [
            torch.stack([clip_returns(member, normalized_clips[chunk]) for member in model.members])
            for chunk in validation.clips.split(chunk_clips)
        ],
        dim=1,
    )[:, validation.pair_positions]  # (M, n_val, 2)
    mean_returns = member_returns.mean(dim=0)
    loss = loss_fn(mean_returns[:, 0], mean_returns[:, 1], validation.targets, validation.weights).item()
    member_losses = tuple(
        loss_fn(returns[:, 0], returns[:, 1], validation.targets, validation.weights).item()
        for returns in member_returns
    )
    accuracy = pairwise_accuracy(
        (mean_returns[:, 0] - mean_returns[:, 1]).cpu().numpy(), validation.targets.cpu().numpy()
    )
    return loss, accuracy, member_losses


def _step_reward_stats(model: RewardEnsemble, clip_features: np.ndarray, chunk_clips: int) -> MeanStd:
    """Mean/std of the ensemble-mean per-step reward over every step of the given clips."""
    with torch.no_grad():
        rewards = [
            model.member_step_rewards(torch.from_numpy(clip_features[start : start + chunk_clips]).to(model.device))
            .mean(dim=0)
            .double()
            .cpu()
            .numpy()
            for start in range(0, len(clip_features), chunk_clips)
        ]
    return MeanStd.of(np.concatenate([r.reshape(-1) for r in rewards]), axis=None)


def _returns_of_all_clips(model: RewardEnsemble, clip_features: np.ndarray, true_returns: np.ndarray) -> np.ndarray:
    """Ensemble returns for clips with a known true return (NaN elsewhere, never computed)."""
    predicted = np.full(len(clip_features), np.nan)
    known = np.flatnonzero(np.isfinite(true_returns))
    if known.size:
        predicted[known] = model.predict_returns(clip_features[known])
    return predicted


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.nan


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _progress_message(row: EpochMetrics, config: RewardModelConfig, stopping: _EarlyStopping) -> str:
    message = (
        f"epoch {row.epoch}/{config.max_epochs}: train loss {row.train_loss:.4f}, "
        f"val loss {row.val_loss:.4f}, val accuracy {row.val_accuracy:.3f}"
    )
    if stopping.stopped_early:
        message += f"; early stop, restoring epoch {stopping.best_epoch}"
    return message


class _Sequential:
    """``ThreadPoolExecutor.map``'s contract, run in the calling thread."""

    def map(self, function: Callable[..., Any], *iterables: Any) -> list[Any]:
        return [function(*arguments) for arguments in zip(*iterables, strict=True)]


def member_threads(config: RewardModelConfig) -> int:
    """Threads that train members side by side: ``config.member_threads``, or one per member up to the CPUs."""
    if config.member_threads is not None:
        return min(config.member_threads, config.ensemble_size)
    return max(1, min(config.ensemble_size, len(os.sched_getaffinity(0))))


@contextmanager
def _member_runner(config: RewardModelConfig) -> Iterator[_Sequential | ThreadPoolExecutor]:
    threads = member_threads(config)
    if threads <= 1:
        yield _Sequential()
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="reward-member") as pool:
        yield pool


@contextmanager
def _torch_runtime(config: RewardModelConfig, device: torch.device) -> Iterator[None]:
    """Apply the config's thread count and determinism only for the duration of training, then
    restore torch's process-wide settings (importing this package changes nothing)."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        # The CPU kernels used here are deterministic already; CUDA's index backward and cuBLAS
        # are not unless asked (cuBLAS also needs this workspace setting).
        if config.deterministic and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
