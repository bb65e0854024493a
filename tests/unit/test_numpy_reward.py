"""The policy's per-step reward in numpy equals the torch ensemble's, to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.core.policy import LearnedRewardWrapper, ensemble_reward_fn
from trainer.core.reward import MeanStd, RewardEnsemble, RewardModelConfig
from trainer.core.reward.data import FeatureLayout
from trainer.core.reward.numpy_reward import NumpyReward


def ensemble(activation: str, *, hidden=(64, 64), members=3, dim=4, seed=0) -> RewardEnsemble:
    rng = np.random.default_rng(seed)
    return RewardEnsemble(
        RewardModelConfig(hidden_sizes=hidden, activation=activation, ensemble_size=members, seed=seed),
        FeatureLayout(feature_dim=dim, obs_dim=dim - 1, action_dim=1),
        feature_stats=MeanStd(rng.normal(size=dim).astype(np.float32), rng.uniform(0.5, 2.0, dim).astype(np.float32)),
        reward_stats=MeanStd(np.float32(0.37), np.float32(1.9)),
    ).eval()


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu"])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("shape", [(1,), (257,), (3, 50)])
def test_numpy_forward_equals_the_torch_ensemble(activation, normalized, shape):
    model = ensemble(activation)
    features = np.random.default_rng(1).normal(scale=2.0, size=(*shape, 4)).astype(np.float32)
    expected = model.normalized_reward(features) if normalized else model.reward(features)
    got = NumpyReward(model, normalized=normalized)(features)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_other_shapes_and_a_single_member():
    model = ensemble("relu", hidden=(32, 16, 8), members=1, dim=7)
    features = np.random.default_rng(2).normal(size=(100, 7)).astype(np.float32)
    np.testing.assert_allclose(NumpyReward(model, normalized=False)(features), model.reward(features), atol=1e-6)


def test_more_steps_than_one_chunk(monkeypatch):
    from trainer.core.reward import numpy_reward

    monkeypatch.setattr(numpy_reward, "_STEPS_PER_CHUNK", 7)
    model = ensemble("tanh")
    features = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_allclose(
        NumpyReward(model, normalized=True)(features), model.normalized_reward(features), atol=1e-6
    )


def test_weights_are_copied_and_wrong_widths_refused():
    model = ensemble("relu")
    reward = NumpyReward(model, normalized=False)
    features = np.ones((2, 4), dtype=np.float32)
    before = reward(features)
    with torch.no_grad():
        model.members[0].layers[0].weight.add_(1.0)
    np.testing.assert_array_equal(reward(features), before)  # a snapshot: training on doesn't leak in
    with pytest.raises(ValueError, match="dimension 4"):
        reward(np.ones((2, 5), dtype=np.float32))


def test_an_episode_through_the_wrapper_gets_the_torch_rewards():
    import gymnasium

    model = ensemble("relu")
    wrapped = LearnedRewardWrapper(gymnasium.make("Pendulum-v1"), ensemble_reward_fn(model, normalized=True))
    obs, _ = wrapped.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-2, 2, size=1).astype(np.float32)
        features = np.concatenate([obs, action]).astype(np.float32)[np.newaxis]
        obs, reward, *_ = wrapped.step(action)
        assert reward == pytest.approx(float(model.normalized_reward(features)[0]), rel=1e-5, abs=1e-6)
