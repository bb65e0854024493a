"""heronry_client.reward computes the platform's per-step reward (trainer.core.reward + reward_wrapper) from
the checkpoint's two documents alone: same features, same normalisation, to float tolerance."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from heronry_client.gym import LearnedReward
from heronry_client.reward import RewardModel, RewardModelError

from trainer.core.policy.reward_wrapper import LearnedRewardWrapper, ensemble_reward_fn, feature_dim, features_of
from trainer.core.reward import MeanStd, RewardEnsemble, RewardModelConfig, to_bytes
from trainer.core.reward.data import FeatureLayout


def platform_ensemble(env_id: str, *, activation: str = "relu", seed: int = 0) -> tuple[RewardEnsemble, gymnasium.Env]:
    """A reward ensemble for ``env_id`` with non-trivial feature and reward statistics (as training leaves)."""
    env = gymnasium.make(env_id)
    dim = feature_dim(env.observation_space, env.action_space)
    obs_dim = int(np.prod(env.observation_space.shape))
    config = RewardModelConfig(hidden_sizes=(32, 16), activation=activation, ensemble_size=3, seed=seed)
    layout = FeatureLayout(feature_dim=dim, obs_dim=obs_dim, action_dim=dim - obs_dim)
    rng = np.random.default_rng(seed)
    ensemble = RewardEnsemble(
        config,
        layout,
        feature_stats=MeanStd(rng.normal(size=dim).astype(np.float32), rng.uniform(0.5, 2.0, dim).astype(np.float32)),
        reward_stats=MeanStd(np.float32(0.37), np.float32(1.9)),
    )
    return ensemble.eval(), env


def client_model(ensemble: RewardEnsemble) -> RewardModel:
    documents = to_bytes(ensemble)
    return RewardModel(documents.weights, documents.metadata)


def random_steps(env: gymnasium.Env, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    env.observation_space.seed(seed)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    obs = np.stack([env.observation_space.sample() for _ in range(n)]) * rng.uniform(0.5, 1.5)
    actions = np.stack([env.action_space.sample() for _ in range(n)])
    return obs.astype(np.float32), actions


@pytest.mark.parametrize(
    ("env_id", "activation"),
    [("Pendulum-v1", "relu"), ("Pendulum-v1", "tanh"), ("CartPole-v1", "relu"), ("CartPole-v1", "gelu")],
)
@pytest.mark.parametrize("normalized", [True, False])
def test_batched_rewards_equal_the_platform(env_id, activation, normalized):
    ensemble, env = platform_ensemble(env_id, activation=activation)
    model = client_model(ensemble)
    obs, actions = random_steps(env, 257, seed=3)
    n_discrete = int(env.action_space.n) if isinstance(env.action_space, gymnasium.spaces.Discrete) else None
    platform_features = np.stack([features_of(o, a, n_discrete) for o, a in zip(obs, actions, strict=True)])
    expected = ensemble_reward_fn(ensemble, normalized=normalized)(platform_features)
    got = model.reward(obs, actions, normalized=normalized)  # discrete detected from integer actions
    np.testing.assert_array_equal(model.features(obs, actions), platform_features)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (257,)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_gymnasium_wrapper_gives_the_platform_wrappers_rewards(env_id):
    ensemble, _ = platform_ensemble(env_id, seed=1)
    model = client_model(ensemble)
    ours = LearnedReward(gymnasium.make(env_id), model)
    theirs = LearnedRewardWrapper(gymnasium.make(env_id), ensemble_reward_fn(ensemble, normalized=True))
    ours.reset(seed=5)
    theirs.reset(seed=5)
    ours.action_space.seed(5)
    for _ in range(120):
        action = ours.action_space.sample()
        obs_a, reward_a, term_a, trunc_a, info_a = ours.step(action)
        obs_b, reward_b, _, _, info_b = theirs.step(action)
        np.testing.assert_array_equal(obs_a, obs_b)
        assert reward_a == pytest.approx(reward_b, rel=1e-5, abs=1e-6)
        assert info_a["true_reward"] == info_b["true_reward"]
        if term_a or trunc_a:
            ours.reset(seed=6)
            theirs.reset(seed=6)


def test_sb3_vec_wrapper_gives_the_platform_rewards_across_resets():
    from heronry_client.sb3 import VecLearnedReward
    from stable_baselines3.common.env_util import make_vec_env

    ensemble, _ = platform_ensemble("CartPole-v1", seed=2)
    model = client_model(ensemble)
    venv = VecLearnedReward(make_vec_env("CartPole-v1", n_envs=3, seed=0), model)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    dones_seen = 0
    for _ in range(80):
        actions = rng.integers(0, 2, size=3)
        features = np.stack([features_of(o, a, 2) for o, a in zip(obs, actions, strict=True)])
        expected = ensemble.normalized_reward(features)
        obs, rewards, dones, infos = venv.step(actions)
        np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-6)
        assert all("true_reward" in info for info in infos)
        dones_seen += int(dones.sum())
    assert dones_seen > 0  # the features after an automatic reset start from the new episode


def test_refuses_mismatched_or_foreign_documents():
    ensemble, _ = platform_ensemble("Pendulum-v1")
    documents = to_bytes(ensemble)
    other = to_bytes(platform_ensemble("Pendulum-v1", seed=9)[0])
    with pytest.raises(RewardModelError, match="SHA-256"):
        RewardModel(other.weights, documents.metadata)
    with pytest.raises(RewardModelError, match="format"):
        RewardModel(documents.weights, {"format": "something-else"})
    model = RewardModel(documents.weights, documents.metadata)
    with pytest.raises(RewardModelError, match="features"):
        model.reward(np.zeros((2, 5), np.float32), np.zeros((2, 1), np.float32))


def test_loads_from_files(tmp_path):
    from trainer.core.reward import save_checkpoint

    ensemble, env = platform_ensemble("Pendulum-v1")
    save_checkpoint(ensemble, tmp_path)
    model = RewardModel.from_files(tmp_path)
    obs, actions = random_steps(env, 16, seed=0)
    features = np.concatenate([obs, actions], axis=1)
    np.testing.assert_allclose(model.reward(obs, actions), ensemble.normalized_reward(features), rtol=1e-5, atol=1e-6)
