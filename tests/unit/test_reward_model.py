"""Unit tests of the reward-model core (trainer/core/reward): torch only, no Django.

The synthetic problem: 200 clips of 20 steps with 4 Gaussian features and a hidden, mostly linear
per-step reward; pairs are labelled by the true return difference (hard labels, plus a share of
soft labels and ties). Small networks keep the whole file to a few seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.core.loop_settings import LoopSettings
from trainer.core.reward import (
    CHECKPOINT_FORMAT_VERSION,
    BradleyTerryLoss,
    CheckpointError,
    FeatureLayout,
    PreferenceDataset,
    RewardModelConfig,
    RunningNormalizer,
    TrainingResult,
    apply_label_noise,
    effective_batch_size,
    from_bytes,
    load_checkpoint,
    member_threads,
    pairwise_accuracy,
    save_checkpoint,
    scheduled_updates,
    split_pairs,
    to_bytes,
    train_reward_model,
    weights_from_bytes,
    weights_to_bytes,
)

N_CLIPS, CLIP_LENGTH, FEATURE_DIM = 200, 20, 4
TRUE_WEIGHTS = np.array([1.0, -0.6, 0.4, 0.0])

# Small and quick, but otherwise the real training path (ensemble of 3, bootstrap, early stopping).
FAST_CONFIG = RewardModelConfig(hidden_sizes=(64, 64), batch_size=64, max_epochs=40, patience=5, num_threads=1)


def true_step_reward(features: np.ndarray) -> np.ndarray:
    """Mostly linear hidden reward, with a mild non-linearity the MLP has to pick up."""
    return features @ TRUE_WEIGHTS + 0.3 * np.sin(2.0 * features[..., 3])


def make_problem(seed: int = 0, n_pairs: int = 800) -> tuple[PreferenceDataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(N_CLIPS, CLIP_LENGTH, FEATURE_DIM)).astype(np.float32)
    true_returns = true_step_reward(features).sum(axis=1)
    first = rng.integers(0, N_CLIPS, size=n_pairs)
    second = (first + rng.integers(1, N_CLIPS, size=n_pairs)) % N_CLIPS
    pairs = np.stack([first, second], axis=1)
    difference = true_returns[first] - true_returns[second]
    targets = (difference > 0).astype(np.float32)
    # A quarter of the labels are soft (a labeller's confidence), and near-equal returns are ties.
    soft = rng.random(n_pairs) < 0.25
    targets[soft] = 1.0 / (1.0 + np.exp(-difference[soft] / 2.0))
    targets[np.abs(difference) < 0.2] = 0.5
    layout = FeatureLayout(feature_dim=FEATURE_DIM, obs_dim=3, action_dim=1)
    return PreferenceDataset(features, pairs, targets, layout=layout), true_returns


@pytest.fixture(scope="module")
def problem() -> tuple[PreferenceDataset, np.ndarray]:
    return make_problem()


@pytest.fixture(scope="module")
def trained(problem: tuple[PreferenceDataset, np.ndarray]) -> TrainingResult:
    dataset, true_returns = problem
    return train_reward_model(dataset, FAST_CONFIG, true_returns=true_returns)


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    state_a, state_b = a.state_dict(), b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# --- reproducibility ---------------------------------------------------------------------------
def test_members_trained_side_by_side_on_threads_give_bitwise_the_same_weights(problem):
    """Threads only change when each member's epoch runs, never what it computes."""
    dataset, _ = problem
    config = FAST_CONFIG.replace(max_epochs=4, hidden_sizes=(32, 32), ensemble_size=3)
    alone = train_reward_model(dataset, config.replace(member_threads=1))
    side_by_side = train_reward_model(dataset, config.replace(member_threads=3))
    assert state_dicts_equal(alone.model, side_by_side.model)
    assert [row.to_dict() | {"seconds": 0} for row in alone.history] == [
        row.to_dict() | {"seconds": 0} for row in side_by_side.history
    ]
    assert member_threads(config.replace(member_threads=8)) == 3  # never more threads than members
    assert 1 <= member_threads(config) <= 3
    with pytest.raises(ValueError, match="member_threads"):
        config.replace(member_threads=0)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_same_seed_gives_bitwise_identical_weights(problem, precision):
    dataset, _ = problem
    config = FAST_CONFIG.replace(max_epochs=3, hidden_sizes=(32, 32), training_precision=precision)
    first = train_reward_model(dataset, config)
    torch.manual_seed(12345)  # the global RNG state must not matter
    np.random.seed(999)
    second = train_reward_model(dataset, config)

    assert state_dicts_equal(first.model, second.model)
    assert [row.val_loss for row in first.history] == [row.val_loss for row in second.history]
    assert np.array_equal(first.val_pair_indices, second.val_pair_indices)
    assert first.metrics["training_precision"] == precision

    other_seed = train_reward_model(dataset, config.replace(seed=1))
    assert not state_dicts_equal(first.model, other_seed.model)
    # Training from an explicit rng equal to the default one is the same run.
    from_rng = train_reward_model(dataset, config, rng=np.random.default_rng(config.seed))
    assert state_dicts_equal(first.model, from_rng.model)


def test_training_leaves_global_random_state_alone(problem):
    dataset, _ = problem
    torch.manual_seed(12345)
    np.random.seed(999)
    train_reward_model(dataset, FAST_CONFIG.replace(max_epochs=1, hidden_sizes=(8,)))
    draws_after_training = (torch.rand(3), np.random.random(3))
    torch.manual_seed(12345)
    np.random.seed(999)
    assert torch.equal(draws_after_training[0], torch.rand(3))
    assert np.array_equal(draws_after_training[1], np.random.random(3))


def test_float32_and_bfloat16_training_learn_equally_well(problem):
    dataset, true_returns = problem
    config = FAST_CONFIG.replace(max_epochs=12, patience=0)
    accuracy = {
        precision: train_reward_model(dataset, config.replace(training_precision=precision), true_returns=true_returns)
        for precision in ("float32", "bfloat16")
    }
    assert accuracy["bfloat16"].metrics["val_accuracy"] == pytest.approx(
        accuracy["float32"].metrics["val_accuracy"], abs=0.03
    )
    assert accuracy["bfloat16"].metrics["spearman"] == pytest.approx(accuracy["float32"].metrics["spearman"], abs=0.02)


def test_training_restores_torch_thread_setting(problem):
    dataset, _ = problem
    before = torch.get_num_threads()
    result = train_reward_model(dataset, FAST_CONFIG.replace(max_epochs=1, hidden_sizes=(8,), num_threads=1))
    assert result.metrics["num_threads"] == 1
    assert torch.get_num_threads() == before


def test_members_differ(trained):
    first, second = trained.model.members[0], trained.model.members[1]
    assert not torch.equal(first.layers[0].weight, second.layers[0].weight)


# --- learning quality --------------------------------------------------------------------------
def test_training_beats_untrained_model_and_ranks_clips(trained):
    metrics = trained.metrics
    assert metrics["val_accuracy"] >= 0.85
    assert metrics["val_accuracy"] > metrics["initial_val_accuracy"] + 0.1
    assert metrics["val_loss"] < metrics["initial_val_loss"]
    assert metrics["correlation_clip_set"] == "held_out"
    assert metrics["correlation_clips"] >= 10
    assert metrics["spearman"] >= 0.9
    assert metrics["pearson"] >= 0.85
    history = trained.history
    assert len(history) == metrics["epochs_run"]
    assert all(math.isfinite(row.train_loss) and 0 <= row.train_accuracy <= 1 for row in history)
    assert all(len(row.member_val_losses) == FAST_CONFIG.ensemble_size for row in history)


def test_correlation_falls_back_to_all_clips_and_ignores_unknown_returns(problem):
    dataset, true_returns = problem
    partly_known = true_returns.copy()
    partly_known[: N_CLIPS // 2] = np.nan
    result = train_reward_model(
        dataset, FAST_CONFIG.replace(max_epochs=2, hidden_sizes=(16,), val_fraction=0.005), true_returns=partly_known
    )
    # 4 validation pairs: at most 8 held-out clips, too few, so every clip with a known return.
    assert result.metrics["correlation_clip_set"] == "all"
    assert result.metrics["correlation_clips"] == N_CLIPS // 2
    assert math.isfinite(result.metrics["spearman"])


def test_normalized_reward_is_standardised_over_training_clips(trained, problem):
    dataset, _ = problem
    train_clips = np.unique(dataset.pairs[trained.train_pair_indices])
    normalized = trained.model.normalized_reward(dataset.clip_features[train_clips])
    assert normalized.shape == (len(train_clips), CLIP_LENGTH)
    assert abs(float(normalized.mean())) < 1e-3
    assert abs(float(normalized.std()) - 1.0) < 1e-3
    # The reward is the ensemble mean, and a clip's score is its sum over steps.
    assert trained.model.reward(dataset.clip_features[0, 0]).shape == ()  # a single step
    rewards = trained.model.reward(dataset.clip_features[:5])
    np.testing.assert_allclose(rewards.sum(axis=1), trained.model.predict_returns(dataset.clip_features[:5]), rtol=1e-5)


def test_stats_clips_normalise_on_the_whole_pool_not_on_the_few_labelled_clips(problem):
    """A model trained on a handful of pairs is normalised on every clip it is given (issue 13): the policy sees
    the pool's states, not only the ~20 clips of 10 labels."""
    dataset, _ = problem
    few = PreferenceDataset(dataset.clip_features, dataset.pairs[:10], dataset.targets[:10], layout=dataset.layout)
    config = dataclasses.replace(FAST_CONFIG, max_epochs=3, val_fraction=0.0)
    pool = np.arange(N_CLIPS)
    result = train_reward_model(few, config, stats_clips=pool)
    feature_stats = result.model.feature_stats()
    np.testing.assert_allclose(feature_stats.mean, dataset.clip_features.mean(axis=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(feature_stats.std, dataset.clip_features.std(axis=(0, 1)), rtol=1e-4)
    normalized = result.model.normalized_reward(dataset.clip_features)
    assert abs(float(normalized.mean())) < 1e-3
    assert abs(float(normalized.std()) - 1.0) < 1e-3
    # The default stays the training pairs' clips.
    labelled = np.unique(few.pairs)
    default = train_reward_model(few, config).model.feature_stats()
    np.testing.assert_allclose(default.mean, dataset.clip_features[labelled].mean(axis=(0, 1)), atol=1e-5)
    for bad in (np.array([], dtype=np.int64), np.array([N_CLIPS]), np.array([-1])):
        with pytest.raises(ValueError, match="stats_clips"):
            train_reward_model(few, config, stats_clips=bad)


# --- loss --------------------------------------------------------------------------------------
def test_bradley_terry_loss_matches_the_formula_with_soft_targets():
    loss = BradleyTerryLoss()
    returns_a, returns_b = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.5, 0.0, 1.0])
    targets, weights = torch.tensor([1.0, 0.5, 0.3]), torch.tensor([1.0, 2.0, 0.5])
    probability = torch.sigmoid(returns_a - returns_b)
    cross_entropy = -(targets * probability.log() + (1 - targets) * (1 - probability).log())
    expected = (weights * cross_entropy).sum() / weights.sum()
    assert torch.allclose(loss(returns_a, returns_b, targets, weights), expected)

    # A tie (target 0.5) is best explained by equal returns: zero gradient at R_a = R_b.
    tied = torch.zeros(1, requires_grad=True)
    loss(tied, torch.zeros(1), torch.tensor([0.5]), torch.ones(1)).backward()
    assert tied.grad is not None and tied.grad.abs().item() < 1e-7
    # A soft target y is fitted exactly when sigmoid(R_a - R_b) = y.
    y = 0.8
    best_diff = math.log(y / (1 - y))
    diff = torch.tensor([best_diff], requires_grad=True)
    loss(diff, torch.zeros(1), torch.tensor([y]), torch.ones(1)).backward()
    assert diff.grad is not None and diff.grad.abs().item() < 1e-6


def test_zero_weight_pair_contributes_nothing_and_weights_act_like_counts():
    loss = BradleyTerryLoss(label_noise=0.1)
    returns_a = torch.tensor([1.0, -2.0, 0.3], requires_grad=True)
    returns_b = torch.tensor([0.0, 1.0, 3.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    with_zero = loss(returns_a, returns_b, targets, torch.tensor([1.0, 1.0, 0.0]))
    without = loss(returns_a[:2], returns_b[:2], targets[:2], torch.ones(2))
    assert with_zero.item() == pytest.approx(without.item(), abs=1e-7)
    with_zero.backward()
    assert returns_a.grad is not None and returns_a.grad[2].item() == 0.0

    doubled = loss(returns_a, returns_b, targets, torch.tensor([2.0, 1.0, 1.0]))
    duplicated = loss(
        torch.cat([returns_a, returns_a[:1]]),
        torch.cat([returns_b, returns_b[:1]]),
        torch.cat([targets, targets[:1]]),
        torch.ones(4),
    )
    assert doubled.item() == pytest.approx(duplicated.item(), rel=1e-6)
    # All-zero weights: a zero loss, not NaN.
    assert loss(returns_a, returns_b, targets, torch.zeros(3)).item() == 0.0


def test_label_noise_formula_and_stability():
    probability = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(apply_label_noise(probability, 0.2), [0.1, 0.3, 0.5, 0.9])
    np.testing.assert_allclose(apply_label_noise(probability, 0.0), probability)

    epsilon = 0.2
    loss = BradleyTerryLoss(label_noise=epsilon)
    diff = torch.tensor([1.5, -0.7])
    targets = torch.tensor([1.0, 0.25])
    noisy = epsilon / 2 + (1 - epsilon) * torch.sigmoid(diff)
    expected = -(targets * noisy.log() + (1 - targets) * (1 - noisy).log()).mean()
    assert loss(diff, torch.zeros(2), targets, torch.ones(2)).item() == pytest.approx(expected.item(), rel=1e-6)

    # A confidently wrong prediction costs at most -log(ε/2) with noise, and stays finite.
    far = torch.tensor([-300.0], requires_grad=True)
    value = loss(far, torch.zeros(1), torch.ones(1), torch.ones(1))
    assert value.item() == pytest.approx(-math.log(epsilon / 2), rel=1e-5)
    value.backward()
    assert far.grad is not None and torch.isfinite(far.grad).all()
    assert BradleyTerryLoss()(far, torch.zeros(1), torch.ones(1), torch.ones(1)).item() == pytest.approx(300.0)
    with pytest.raises(ValueError, match="label_noise"):
        BradleyTerryLoss(label_noise=1.0)


def test_pairwise_accuracy_ignores_ties():
    assert pairwise_accuracy(np.array([1.0, -1.0, 5.0, 0.0]), np.array([1.0, 1.0, 0.5, 0.0])) == pytest.approx(2 / 3)
    assert math.isnan(pairwise_accuracy(np.array([1.0]), np.array([0.5])))


# --- early stopping ----------------------------------------------------------------------------
def test_early_stopping_on_plateau_restores_best_epoch(problem):
    dataset, _ = problem
    # Labels unrelated to the clips: the validation loss can only get worse once the model starts
    # memorising the training labels, so training must stop early.
    rng = np.random.default_rng(3)
    noise_labels = dataclasses.replace(dataset, targets=rng.integers(0, 2, dataset.n_pairs).astype(np.float32))
    config = FAST_CONFIG.replace(max_epochs=100, patience=4, learning_rate=3e-3, val_fraction=0.25, min_delta=0.0)
    calls: list[tuple[float, str]] = []
    result = train_reward_model(
        noise_labels, config, progress=lambda fraction, message: calls.append((fraction, message))
    )

    metrics, history = result.metrics, result.history
    assert metrics["stopped_early"]
    assert metrics["epochs_run"] < config.max_epochs
    best_epoch = int(np.argmin([row.val_loss for row in history])) + 1
    assert metrics["best_epoch"] == best_epoch
    assert metrics["epochs_run"] == best_epoch + config.patience
    assert metrics["val_loss"] == history[best_epoch - 1].val_loss

    # The returned weights are those of the best epoch: recomputing its validation loss agrees.
    val_pairs = noise_labels.pairs[result.val_pair_indices]
    returns = result.model.predict_returns(noise_labels.clip_features)
    recomputed = BradleyTerryLoss()(
        torch.from_numpy(returns[val_pairs[:, 0]]),
        torch.from_numpy(returns[val_pairs[:, 1]]),
        torch.from_numpy(noise_labels.targets[result.val_pair_indices]),
        torch.ones(len(val_pairs)),
    )
    assert recomputed.item() == pytest.approx(metrics["val_loss"], rel=1e-4)

    # Progress: once per epoch, increasing fractions, the last one 1.0.
    assert len(calls) == metrics["epochs_run"]
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "early stop" in calls[-1][1]


def test_min_delta_ends_a_slow_creep_but_restores_the_lowest_loss(problem):
    dataset, _ = problem
    base = FAST_CONFIG.replace(max_epochs=25, patience=3, hidden_sizes=(32, 32))
    strict = train_reward_model(dataset, base.replace(min_delta=0.0))
    lenient = train_reward_model(dataset, base.replace(min_delta=0.05))
    # Same seed, so the runs agree epoch by epoch until the lenient one stops.
    assert lenient.metrics["epochs_run"] < strict.metrics["epochs_run"]
    assert [row.val_loss for row in lenient.history] == [
        row.val_loss for row in strict.history[: lenient.metrics["epochs_run"]]
    ]
    losses = [row.val_loss for row in lenient.history]
    assert lenient.metrics["best_epoch"] == int(np.argmin(losses)) + 1
    assert lenient.metrics["val_loss"] == min(losses)


def test_a_raising_progress_callback_cancels_training_cleanly(problem):
    dataset, _ = problem
    threads_before = torch.get_num_threads()

    class Cancelled(Exception):
        pass

    def cancel_after_two_epochs(fraction: float, message: str) -> None:
        if message.startswith("epoch 2/"):
            raise Cancelled

    with pytest.raises(Cancelled):
        train_reward_model(
            dataset, FAST_CONFIG.replace(hidden_sizes=(8,), num_threads=1), progress=cancel_after_two_epochs
        )
    assert torch.get_num_threads() == threads_before


def test_a_loss_that_is_never_finite_keeps_the_last_weights(problem):
    dataset, _ = problem

    def nan_on_validation(returns_a, returns_b, targets, weights):
        loss = BradleyTerryLoss()(returns_a, returns_b, targets, weights)
        return loss if torch.is_grad_enabled() else loss * float("nan")

    result = train_reward_model(
        dataset, FAST_CONFIG.replace(max_epochs=3, hidden_sizes=(8,)), loss_fn=nan_on_validation
    )
    assert result.metrics["best_epoch"] == 3 and result.metrics["epochs_run"] == 3


def test_without_validation_trains_all_epochs_and_keeps_last(problem):
    dataset, _ = problem
    calls: list[float] = []
    result = train_reward_model(
        dataset,
        # updates_per_pair=0: no size schedule, so max_epochs sets the length.
        FAST_CONFIG.replace(val_fraction=0.0, max_epochs=3, hidden_sizes=(16,), updates_per_pair=0.0),
        progress=lambda fraction, _: calls.append(fraction),
    )
    assert result.metrics["epochs_run"] == 3 and result.metrics["best_epoch"] == 3
    assert len(result.val_pair_indices) == 0 and math.isnan(result.metrics["val_loss"])
    assert calls == pytest.approx([1 / 3, 2 / 3, 1.0])


# --- ensemble uncertainty ------------------------------------------------------------------------
def test_preference_probability_and_disagreement_shapes(trained, problem):
    dataset, _ = problem
    model = trained.model
    mean, std = model.preference_probability(dataset.clip_features[0], dataset.clip_features[1])
    assert mean.shape == () and std.shape == ()
    assert 0.0 <= float(mean) <= 1.0 and float(std) >= 0.0

    pairs = dataset.pairs[:50]
    batch_mean, batch_std = model.preference_probability(
        dataset.clip_features[pairs[:, 0]], dataset.clip_features[pairs[:, 1]]
    )
    pair_mean, pair_std = model.pair_preference_probabilities(dataset.clip_features, pairs)
    disagreement = model.disagreement(dataset.clip_features, pairs)
    assert batch_mean.shape == batch_std.shape == disagreement.shape == (50,)
    np.testing.assert_allclose(pair_mean, batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(disagreement, pair_std, rtol=1e-6)
    assert (disagreement >= 0).all()
    # A clip compared with itself: every member says exactly 0.5.
    same_mean, same_std = model.preference_probability(dataset.clip_features[:3], dataset.clip_features[:3])
    np.testing.assert_array_equal(same_mean, 0.5)
    np.testing.assert_array_equal(same_std, 0.0)


def test_disagreement_grows_away_from_the_training_data():
    # Feature 3 never varies in training, so no member learns what it does (their random initial
    # weights on it are never trained): pairs that differ only in feature 3 lie outside the data.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(120, 10, 4)).astype(np.float32)
    features[..., 3] = 0.0
    returns = features[..., :3].sum(axis=(1, 2))
    pairs = rng.integers(0, 120, size=(400, 2))
    targets = (returns[pairs[:, 0]] > returns[pairs[:, 1]]).astype(np.float32)
    dataset = PreferenceDataset(features, pairs, targets)
    model = train_reward_model(dataset, FAST_CONFIG.replace(max_epochs=30, hidden_sizes=(32, 32))).model

    in_distribution = model.disagreement(features, pairs)
    # Moderate shifts: very far out, all members may saturate to the same P = 0 or 1, where the
    # spread of P (unlike the spread of R_a - R_b) shrinks again.
    out_of_distribution = []
    for shift in (1.0, 2.0, 3.0):
        shifted = features.copy()
        shifted[..., 3] = shift
        both = np.concatenate([features, shifted])
        same_clip_shifted = np.stack([np.arange(120), np.arange(120) + 120], axis=1)
        out_of_distribution.append(model.disagreement(both, same_clip_shifted).mean())
    assert np.mean(out_of_distribution) > 2 * np.median(in_distribution)
    assert np.mean(out_of_distribution) > in_distribution.mean()


# --- checkpoints -------------------------------------------------------------------------------
def test_checkpoint_files_round_trip(trained, problem, tmp_path: Path):
    dataset, _ = problem
    paths = save_checkpoint(trained, tmp_path / "run", extra={"project": "demo"})
    assert paths.weights.name.endswith(".safetensors") and paths.metadata.name.endswith(".json")

    loaded = load_checkpoint(tmp_path / "run")
    model, metadata = loaded.model, loaded.metadata
    assert state_dicts_equal(model, trained.model)
    np.testing.assert_array_equal(
        model.predict_member_returns(dataset.clip_features), trained.model.predict_member_returns(dataset.clip_features)
    )
    np.testing.assert_array_equal(
        model.normalized_reward(dataset.clip_features[:4]), trained.model.normalized_reward(dataset.clip_features[:4])
    )
    assert metadata.config == trained.model.config
    assert metadata.layout == dataset.feature_layout
    np.testing.assert_array_equal(metadata.feature_stats.mean, trained.model.feature_stats().mean)
    np.testing.assert_array_equal(metadata.reward_stats.std, trained.model.reward_stats().std)
    assert metadata.extra == {"project": "demo"}
    assert metadata.metrics["val_accuracy"] == trained.metrics["val_accuracy"]
    assert metadata.metrics["member_seeds"] == trained.metrics["member_seeds"]
    assert len(metadata.history) == len(trained.history)
    assert metadata.format_version == CHECKPOINT_FORMAT_VERSION
    assert {"torch", "numpy", "safetensors"} <= metadata.versions.keys()

    # Explicit paths work too, and the JSON is strict JSON (no NaN) and human-readable.
    explicit = save_checkpoint(
        trained.model, weights_path=tmp_path / "w.safetensors", metadata_path=tmp_path / "m.json"
    )
    document = json.loads(explicit.metadata.read_text())
    assert document["config"]["hidden_sizes"] == [64, 64]
    assert load_checkpoint(weights_path=explicit.weights, metadata_path=explicit.metadata).metadata.metrics == {}


def test_checkpoint_bytes_round_trip(trained, problem):
    dataset, _ = problem
    weights, metadata = to_bytes(trained)
    loaded = from_bytes(weights, metadata)
    np.testing.assert_array_equal(
        loaded.model.predict_returns(dataset.clip_features), trained.model.predict_returns(dataset.clip_features)
    )
    # Serialisation is deterministic: the same model gives the same bytes (and SHA-256).
    for _ in range(3):
        assert to_bytes(loaded.model, metrics=trained.metrics, history=trained.history) == (weights, metadata)

    state = weights_from_bytes(weights_to_bytes(trained.model))
    assert state.keys() == trained.model.state_dict().keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in trained.model.state_dict().items())


def test_loading_never_unpickles(trained, monkeypatch):
    weights, metadata = to_bytes(trained)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is not allowed when loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    from_bytes(weights, metadata)


def test_loader_refuses_unknown_format_version(trained, tmp_path: Path):
    paths = save_checkpoint(trained, tmp_path)
    document = json.loads(paths.metadata.read_text())
    document["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    paths.metadata.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=rf"unsupported .* format version {CHECKPOINT_FORMAT_VERSION + 1}"):
        load_checkpoint(tmp_path)

    del document["format"]
    with pytest.raises(CheckpointError, match="not a reward-model checkpoint"):
        from_bytes(paths.weights.read_bytes(), json.dumps(document))


def test_loader_refuses_mismatched_or_broken_files(trained, problem):
    dataset, _ = problem
    weights, metadata = to_bytes(trained)
    other = train_reward_model(dataset, FAST_CONFIG.replace(max_epochs=1, hidden_sizes=(8,)))
    other_weights, _ = to_bytes(other)
    with pytest.raises(CheckpointError, match="do not match"):
        from_bytes(other_weights, metadata)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_bytes(weights, b"{broken")

    document = json.loads(metadata)
    document["weights_sha256"] = ""  # skip the hash check to reach the shape check
    document["config"]["hidden_sizes"] = [8]
    with pytest.raises(CheckpointError, match="do not fit"):
        from_bytes(weights, json.dumps(document))
    document["config"]["hidden_size"] = [8]
    with pytest.raises(CheckpointError, match="unknown RewardModelConfig field"):
        from_bytes(weights, json.dumps(document))


# --- config and data ---------------------------------------------------------------------------
def test_config_round_trips_through_json_and_validates():
    config = RewardModelConfig(hidden_sizes=(32, 16), label_noise=0.1, device="auto", num_threads=2)
    restored = RewardModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.hidden_sizes == (32, 16)
    assert RewardModelConfig.from_dict({}) == RewardModelConfig()
    assert hash(config) == hash(restored)  # frozen and hashable, usable as a cache key
    defaults = RewardModelConfig()
    assert (defaults.hidden_sizes, defaults.ensemble_size, defaults.learning_rate) == ((256, 256), 3, 3e-4)
    assert defaults.resolved_device().type in {"cpu", "cuda"}
    assert defaults.resolved_training_precision(torch.device("cpu")) in {"float32", "bfloat16"}
    assert defaults.resolved_training_precision(torch.device("cuda")) == "float32"
    assert defaults.replace(training_precision="bfloat16").resolved_training_precision(torch.device("cuda")) == (
        "bfloat16"
    )
    assert RewardModelConfig(device="auto").resolved_device().type == ("cuda" if torch.cuda.is_available() else "cpu")

    with pytest.raises(ValueError, match=r"unknown RewardModelConfig field\(s\) \['learning_rat'\]"):
        RewardModelConfig.from_dict({"learning_rat": 1e-3})
    invalid = [
        {"ensemble_size": 0},
        {"ensemble_size": True},
        {"hidden_sizes": (64, 0)},
        {"val_fraction": 1.0},
        {"label_noise": -0.1},
        {"learning_rate": float("nan")},
        {"batch_size": 0},
        {"patience": -1},
        {"device": "not-a-device"},
        {"activation": "swish"},
        {"num_threads": 0},
        {"training_precision": "float16"},
    ]
    for changes in invalid:
        with pytest.raises(ValueError, match="invalid RewardModelConfig"):
            RewardModelConfig(**changes)
    with pytest.raises(ValueError, match=r"ensemble_size.*val_fraction"):
        RewardModelConfig(ensemble_size=0, val_fraction=2.0)


def test_dataset_checks_and_defaults():
    features = np.zeros((3, 5, 2), dtype=np.float64)
    dataset = PreferenceDataset(features, np.array([[0, 1], [1, 2]]), np.array([1.0, 0.5]))
    assert dataset.clip_features.dtype == np.float32 and dataset.pairs.dtype == np.int64
    assert dataset.weights.tolist() == [1.0, 1.0]
    assert dataset.feature_layout == FeatureLayout(feature_dim=2)
    assert dataset.subset(np.array([1, 1])).pairs.tolist() == [[1, 2], [1, 2]]
    with pytest.raises(ValueError, match="outside"):
        PreferenceDataset(features, np.array([[0, 3]]), np.array([1.0]))
    with pytest.raises(ValueError, match="targets"):
        PreferenceDataset(features, np.array([[0, 1]]), np.array([1.5]))
    with pytest.raises(ValueError, match="weights"):
        PreferenceDataset(features, np.array([[0, 1]]), np.array([1.0]), np.array([-1.0]))
    with pytest.raises(ValueError, match=r"\(n_clips, T, D\)"):
        PreferenceDataset(np.zeros((3, 5)), np.array([[0, 1]]), np.array([1.0]))
    with pytest.raises(ValueError, match="feature_dim"):
        FeatureLayout(feature_dim=4, obs_dim=3, action_dim=2)


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_pairs(100, 0.1, np.random.default_rng(0))
    again_train, again_val = split_pairs(100, 0.1, np.random.default_rng(0))
    assert len(val) == 10 and np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert len(split_pairs(5, 0.01, np.random.default_rng(0))[1]) == 1  # at least one held out
    assert len(split_pairs(1, 0.5, np.random.default_rng(0))[0]) == 1  # training keeps one


def test_running_normalizer_matches_batch_statistics():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (1, 7, 50, 13)]
    normalizer = RunningNormalizer(shape=(2,))
    for batch in batches:
        normalizer.update(batch)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(normalizer.mean, everything.mean(axis=0))
    np.testing.assert_allclose(normalizer.var, everything.var(axis=0))
    assert normalizer.count == len(everything)
    restored = RunningNormalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    np.testing.assert_allclose(restored.normalize(everything), normalizer.normalize(everything))


def test_holdout_never_takes_clips_a_person_labelled():
    """Issue 13: a clip held out for the Spearman metric drops every pair touching it (~19 % of the pairs at
    10 %); protected clips (those in human pairs) are never held out, and unprotected sets split as before."""
    from trainer.core.reward import holdout_mask

    unprotected = holdout_mask(200, 0.1, np.random.default_rng(5))
    assert unprotected.sum() == 20
    np.testing.assert_array_equal(
        holdout_mask(200, 0.1, np.random.default_rng(5), protected=np.zeros(200, dtype=bool)), unprotected
    )
    protected = np.zeros(200, dtype=bool)
    protected[:150] = True
    mask = holdout_mask(200, 0.1, np.random.default_rng(5), protected=protected)
    assert mask.sum() == 5 and not (mask & protected).any()
    assert not holdout_mask(200, 0.1, np.random.default_rng(5), protected=np.ones(200, dtype=bool)).any()


def test_min_updates_adds_epochs_when_pairs_are_few(problem):
    """10 pairs are one mini-batch: max_epochs=2 would be two gradient steps; min_updates makes it twelve."""
    dataset, _ = problem
    few = PreferenceDataset(dataset.clip_features, dataset.pairs[:10], dataset.targets[:10], layout=dataset.layout)
    config = dataclasses.replace(FAST_CONFIG, max_epochs=2, val_fraction=0.0, min_updates=12, updates_per_pair=0.0)
    assert len(train_reward_model(few, config).history) == 12
    # With many pairs the epochs already hold enough steps: max_epochs rules.
    assert len(train_reward_model(dataset, dataclasses.replace(config, min_updates=3)).history) == 2
    with pytest.raises(ValueError, match="min_updates"):
        RewardModelConfig(min_updates=-1)


# --- issue 13: the training length follows the data size, not a validation split of a few pairs ----------------
SCHEDULED = dataclasses.replace(FAST_CONFIG, updates_per_pair=2.0, max_updates=120, min_val_pairs=50)


def subset(dataset: PreferenceDataset, n_pairs: int) -> PreferenceDataset:
    return PreferenceDataset(
        dataset.clip_features, dataset.pairs[:n_pairs], dataset.targets[:n_pairs], layout=dataset.layout
    )


def test_a_small_validation_split_is_not_held_out_nor_stopped_on(problem):
    """40 pairs would give 4 validation pairs: every pair is trained on and no epoch is chosen by their noise."""
    dataset, _ = problem
    result = train_reward_model(subset(dataset, 40), SCHEDULED)
    assert result.metrics["n_val_pairs"] == 0 and result.metrics["n_train_pairs"] == 40
    assert not result.metrics["stopped_early"]
    assert result.metrics["best_epoch"] == result.metrics["epochs_run"]
    # With enough pairs for a meaningful split (80 ≥ 50), validation and early stopping work as before.
    assert train_reward_model(dataset, SCHEDULED).metrics["n_val_pairs"] == 80


@pytest.mark.parametrize(("n_pairs", "updates"), [(10, 20), (40, 80), (100, 120)])
def test_gradient_updates_scale_with_the_number_of_pairs(problem, n_pairs, updates):
    """clamp(ceil(2 · pairs), min_updates, 120) steps, in whole epochs of ceil(pairs / 64) batches."""
    dataset, _ = problem
    assert scheduled_updates(SCHEDULED, n_pairs) == updates
    history = train_reward_model(subset(dataset, n_pairs), SCHEDULED).history
    assert len(history) == math.ceil(updates / math.ceil(n_pairs / SCHEDULED.batch_size))
    assert scheduled_updates(dataclasses.replace(SCHEDULED, min_updates=30), 10) == 30
    with pytest.raises(ValueError, match="updates_per_pair"):
        RewardModelConfig(updates_per_pair=-1)
    with pytest.raises(ValueError, match="min_val_pairs"):
        RewardModelConfig(min_val_pairs=-1)


def test_max_batches_per_epoch_grows_the_batch_for_big_sets_only(problem):
    """A big (HERON-sized) set trains in at most max_batches_per_epoch batches per epoch; a set smaller than
    batch_size × max_batches_per_epoch keeps its batches (issue 13)."""
    dataset, _ = problem
    config = dataclasses.replace(FAST_CONFIG, max_batches_per_epoch=2, val_fraction=0.0, updates_per_pair=0.0)
    assert effective_batch_size(config, 3_600) == 1_800
    assert effective_batch_size(config, 100) == config.batch_size  # 64 pairs a batch: 2 batches already
    assert effective_batch_size(dataclasses.replace(config, max_batches_per_epoch=0), 3_600) == config.batch_size
    result = train_reward_model(dataset, dataclasses.replace(config, max_epochs=3))
    assert result.metrics["batch_size"] == math.ceil(result.metrics["n_train_pairs"] / 2)
    # The loop's default: HERON sets of thousands of pairs get 8 batches, pairwise budgets keep 128.
    loop_default = LoopSettings().reward_model_config()
    assert effective_batch_size(loop_default, 3_600) == 450
    assert effective_batch_size(loop_default, 160) == loop_default.batch_size == 128
    with pytest.raises(ValueError, match="max_batches_per_epoch"):
        RewardModelConfig(max_batches_per_epoch=-1)


def test_reward_quality_does_not_fall_as_pairs_grow():
    """On a synthetic problem, the learned return's Spearman with the true one is non-decreasing (within 0.02) in
    the number of pairs, with the product's reward defaults, over three seeds (deterministic, CPU)."""
    defaults = RewardModelConfig(hidden_sizes=(64, 64), num_threads=1)
    for seed in range(3):
        dataset, true_returns = make_problem(seed=seed, n_pairs=160)
        spearmans = [
            train_reward_model(
                subset(dataset, n), dataclasses.replace(defaults, seed=seed), true_returns=true_returns
            ).metrics["spearman"]
            for n in (10, 40, 160)
        ]
        assert all(later >= earlier - 0.02 for earlier, later in itertools.pairwise(spearmans)), spearmans
        assert spearmans[-1] > 0.8
