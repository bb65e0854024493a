"""Unit tests of the policy-training core (trainer/core/policy): SB3/torch only, no Django.

Pendulum-v1 with 200-step episodes throughout; runs are a few hundred steps with an early
``learning_starts`` so that every code path (warm-up, gradient steps, continuing, relabelling)
runs in seconds. One test trains long enough to check that SAC actually learns.
"""

from __future__ import annotations

import io
import json
import zipfile

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.save_util import load_from_zip_file

from trainer.core.envs import make_env
from trainer.core.policy import (
    EvaluationResult,
    LearnedRewardWrapper,
    PolicyConfig,
    PolicySnapshot,
    SB3Policy,
    ensemble_reward_fn,
    evaluate_policy,
    feature_dim,
    features_of,
    load_model,
    relabel,
    replay_buffer_to_bytes,
    restore_replay_buffer,
    train_policy,
)
from trainer.core.reward import FeatureLayout, RewardEnsemble, RewardModelConfig
from trainer.core.rollouts import resimulate, run_rollout

ENV_ID = "Pendulum-v1"
# Small and quick: gradient steps from step 200 on, small batches.
SMALL = PolicyConfig(learning_starts=200, batch_size=64, buffer_size=10_000)
FIRST_STEPS = 600


def pendulum() -> gymnasium.Env:
    return make_env(ENV_ID)


def reward_a(features: np.ndarray) -> np.ndarray:
    """A learned-reward stand-in: pure numpy, so relabelled values match the wrapper's bit for bit."""
    return (-np.abs(features).sum(axis=1)).astype(np.float32)


def reward_b(features: np.ndarray) -> np.ndarray:
    """Another one, dominated by the action (the last column): it tells scaled from unscaled actions."""
    return (3.0 * features[:, -1] + features[:, 0]).astype(np.float32)


def unscaled_features(buffer: ReplayBuffer, rows: int) -> np.ndarray:
    """[obs, action the env saw] of the buffer's first rows; SAC stores actions scaled to [-1, 1]."""
    low, high = buffer.action_space.low, buffer.action_space.high
    actions = low + 0.5 * (buffer.actions[:rows, 0] + 1.0) * (high - low)
    return np.concatenate([buffer.observations[:rows, 0], actions], axis=1).astype(np.float32)


def buffer_of(snapshot: PolicySnapshot, config: PolicyConfig = SMALL) -> ReplayBuffer:
    env = pendulum()
    buffer = ReplayBuffer(config.buffer_size, env.observation_space, env.action_space, device="cpu")
    restore_replay_buffer(buffer, snapshot.replay_buffer)
    return buffer


def weights(snapshot: PolicySnapshot) -> dict[str, torch.Tensor]:
    _, params, variables = load_from_zip_file(io.BytesIO(snapshot.model_zip), load_data=False, device="cpu")
    flat = {f"policy.{name}": tensor for name, tensor in params["policy"].items()}
    flat.update({f"variable.{name}": tensor for name, tensor in (variables or {}).items()})
    return flat


@pytest.fixture(scope="module")
def first_round() -> tuple[PolicySnapshot, list[tuple[float, str]]]:
    """600 SAC steps on reward_a, with the progress reports it made."""
    reports: list[tuple[float, str]] = []
    snapshot = train_policy(
        env_factory=pendulum,
        config=SMALL,
        timesteps=FIRST_STEPS,
        reward_fn=reward_a,
        progress=lambda fraction, message: reports.append((fraction, message)),
    )
    return snapshot, reports


# --- config ------------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = PolicyConfig(net_arch=(32, 16), ent_coef="auto_0.1", algorithm="sac", seed=7)
    restored = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.net_arch == (32, 16)
    assert PolicyConfig.from_dict({"net_arch": [8]}).net_arch == (8,)


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="learnin_rate"):
        PolicyConfig.from_dict({"learnin_rate": 1e-3})
    with pytest.raises(ValueError) as error:
        PolicyConfig(algorithm="dqn", gamma=1.5, ent_coef="auto_x", batch_size=True)
    message = str(error.value)
    for field in ("algorithm", "gamma", "ent_coef", "batch_size"):
        assert field in message


def test_resolved_algorithm_follows_the_action_space() -> None:
    box = gymnasium.spaces.Box(-1.0, 1.0, shape=(2,))
    discrete = gymnasium.spaces.Discrete(3)
    assert PolicyConfig().resolved_algorithm(box) == "sac"
    assert PolicyConfig().resolved_algorithm(discrete) == "ppo"
    assert PolicyConfig(algorithm="ppo").resolved_algorithm(box) == "ppo"
    with pytest.raises(ValueError, match="SAC needs"):
        PolicyConfig(algorithm="sac").resolved_algorithm(discrete)


# --- reward wrapper ----------------------------------------------------------------------------


def test_wrapper_gives_the_learned_reward_and_keeps_the_true_one() -> None:
    wrapped, plain = LearnedRewardWrapper(pendulum(), reward_b), pendulum()
    obs, _ = wrapped.reset(seed=5)
    plain.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
        expected = reward_b(np.concatenate([obs, action])[np.newaxis].astype(np.float32))[0]
        next_obs, reward, _, _, info = wrapped.step(action)
        _, true_reward, _, _, _ = plain.step(action)
        assert reward == pytest.approx(expected)
        assert info["learned_reward"] == reward
        assert info["true_reward"] == pytest.approx(true_reward)
        obs = next_obs


def test_features_of_discrete_actions_and_feature_dim() -> None:
    features = features_of(np.array([0.5, -1.0]), np.int64(2), 3)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, [0.5, -1.0, 0.0, 0.0, 1.0])  # a discrete action is one-hot
    cartpole = gymnasium.make("CartPole-v1")
    assert feature_dim(cartpole.observation_space, cartpole.action_space) == 6
    env = pendulum()
    assert feature_dim(env.observation_space, env.action_space) == 4


def test_ensemble_reward_fn_uses_the_ensemble() -> None:
    ensemble = RewardEnsemble(
        RewardModelConfig(hidden_sizes=(16,), ensemble_size=2), FeatureLayout(feature_dim=4, obs_dim=3, action_dim=1)
    )
    features = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    # The policy's reward is the ensemble's, computed in numpy (trainer.core.reward.numpy_reward): equal to
    # float32 rounding, not bit for bit (BLAS and torch may sum in another order).
    raw = ensemble_reward_fn(ensemble, normalized=False)(features)
    np.testing.assert_allclose(raw, ensemble.reward(features), rtol=1e-5, atol=1e-6)
    normalized = ensemble_reward_fn(ensemble, normalized=True)(features)
    np.testing.assert_allclose(normalized, ensemble.normalized_reward(features), rtol=1e-5, atol=1e-6)


# --- training, determinism, snapshots ----------------------------------------------------------


def test_training_reports_progress_and_restores_threads(first_round) -> None:
    snapshot, reports = first_round
    assert snapshot.algorithm == "sac"
    assert snapshot.num_timesteps == FIRST_STEPS
    assert PolicyConfig.from_dict(snapshot.config) == SMALL
    fractions = [fraction for fraction, _ in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert len(fractions) >= 50  # about every 1 %
    assert any("true reward" in message for _, message in reports)  # 3 episodes ended
    # train_policy ran with config.num_threads=1 and put the caller's setting back.
    threads = torch.get_num_threads()
    train_policy(env_factory=pendulum, config=SMALL.replace(learning_starts=100), timesteps=50, reward_fn=None)
    assert torch.get_num_threads() == threads


def test_training_is_deterministic(first_round) -> None:
    snapshot, _ = first_round
    again = train_policy(env_factory=pendulum, config=SMALL, timesteps=FIRST_STEPS, reward_fn=reward_a)
    first, second = weights(snapshot), weights(again)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert again.replay_buffer == snapshot.replay_buffer


def test_unchecked_distributions_change_no_value_and_are_restored(first_round, monkeypatch) -> None:
    """Training builds torch distributions without checking their parameters (a speed-up): the weights are
    bitwise those of a run that checks them, and the process-wide default is put back afterwards."""
    from contextlib import nullcontext

    from trainer.core.policy import training

    snapshot, _ = first_round
    default = torch.distributions.Distribution._validate_args
    monkeypatch.setattr(training, "_unchecked_distributions", nullcontext)  # torch checks every distribution
    checked = train_policy(env_factory=pendulum, config=SMALL, timesteps=FIRST_STEPS, reward_fn=reward_a)
    first, second = weights(snapshot), weights(checked)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert torch.distributions.Distribution._validate_args == default


@pytest.fixture
def single_thread():
    """Train outside train_policy like it does: one torch thread (oversubscribed cores slow it 10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_load_model_matches_the_in_memory_model(single_thread) -> None:
    env = pendulum()
    config = SMALL.replace(learning_starts=100)
    model = SAC(
        "MlpPolicy",
        env,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        buffer_size=config.buffer_size,
        learning_rate=config.learning_rate,
        policy_kwargs={"net_arch": list(config.net_arch)},
        seed=3,
        device="cpu",
    )
    model.learn(300)
    out = io.BytesIO()
    model.save(out)
    snapshot = PolicySnapshot("sac", out.getvalue(), None, model.num_timesteps, config.to_dict())

    loaded = load_model(snapshot, pendulum())
    assert torch.equal(loaded.log_ent_coef, model.log_ent_coef)
    assert loaded.log_ent_coef.item() != 0.0  # moved away from its initial value: the copy mattered

    def evaluate(policy_model) -> EvaluationResult:
        return evaluate_policy(
            policy_model, env_factory=pendulum, episodes=2, rng=np.random.default_rng(11), reward_fn=reward_b
        )

    in_memory, reloaded = evaluate(model), evaluate(loaded)
    assert reloaded == in_memory
    assert in_memory.learned_returns is not None and len(in_memory.true_returns) == 2
    json.dumps(in_memory.to_dict())  # JSON-friendly


def test_load_model_never_unpickles(first_round) -> None:
    snapshot, _ = first_round
    # A zip whose pickled "data" entry is garbage still loads: it is never read.
    source = zipfile.ZipFile(io.BytesIO(snapshot.model_zip))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"not json, not a pickle" if name == "data" else source.read(name))
    tampered = PolicySnapshot("sac", out.getvalue(), None, snapshot.num_timesteps, snapshot.config)
    assert isinstance(load_model(tampered, pendulum()), SAC)


# --- continuing, replay buffers, relabelling ---------------------------------------------------


def test_buffer_rewards_are_the_wrappers_rewards_of_unscaled_actions(first_round) -> None:
    snapshot, _ = first_round
    buffer = buffer_of(snapshot)
    assert buffer.pos == FIRST_STEPS and not buffer.full
    features = unscaled_features(buffer, FIRST_STEPS)
    np.testing.assert_array_equal(buffer.rewards[:FIRST_STEPS, 0], reward_a(features))
    # The buffer holds scaled actions; the environment saw them times 2 (Pendulum's torque range).
    assert np.abs(buffer.actions[:FIRST_STEPS]).max() <= 1.0 < np.abs(features[:, -1]).max()


def test_relabel_uses_the_unscaled_actions(first_round) -> None:
    snapshot, _ = first_round
    buffer = buffer_of(snapshot)
    model = load_model(snapshot, pendulum())
    assert relabel(buffer, reward_b, unscale_action=model.policy.unscale_action, chunk_size=128) == FIRST_STEPS
    np.testing.assert_array_equal(buffer.rewards[:FIRST_STEPS, 0], reward_b(unscaled_features(buffer, FIRST_STEPS)))


def test_continuing_accumulates_and_relabels(first_round, monkeypatch) -> None:
    snapshot, _ = first_round
    gradient_phases: list[int] = []
    original_train = SAC.train

    def counting_train(self, gradient_steps: int, batch_size: int = 64) -> None:
        gradient_phases.append(gradient_steps)
        original_train(self, gradient_steps, batch_size)

    monkeypatch.setattr(SAC, "train", counting_train)
    more = 300
    continued = train_policy(env_factory=pendulum, config=SMALL, timesteps=more, reward_fn=reward_b, previous=snapshot)
    assert continued.num_timesteps == FIRST_STEPS + more
    assert len(gradient_phases) == more  # no second warm-up: every step trained

    buffer, old = buffer_of(continued), buffer_of(snapshot)
    total = FIRST_STEPS + more
    assert buffer.pos == total
    np.testing.assert_array_equal(buffer.observations[:FIRST_STEPS], old.observations[:FIRST_STEPS])
    np.testing.assert_array_equal(buffer.actions[:FIRST_STEPS], old.actions[:FIRST_STEPS])
    # Old transitions were relabelled, new ones came from the wrapper: all are reward_b now.
    np.testing.assert_array_equal(buffer.rewards[:total, 0], reward_b(unscaled_features(buffer, total)))
    assert not np.array_equal(buffer.rewards[:FIRST_STEPS], old.rewards[:FIRST_STEPS])


def test_continuing_without_relabelling_keeps_old_rewards(first_round) -> None:
    snapshot, _ = first_round
    config = SMALL.replace(relabel_replay_buffer=False)
    continued = train_policy(env_factory=pendulum, config=config, timesteps=10, reward_fn=reward_b, previous=snapshot)
    np.testing.assert_array_equal(buffer_of(continued).rewards[:FIRST_STEPS], buffer_of(snapshot).rewards[:FIRST_STEPS])


def test_restore_rejects_buffers_that_do_not_fit(first_round) -> None:
    snapshot, _ = first_round
    env = pendulum()
    smaller = ReplayBuffer(5_000, env.observation_space, env.action_space, device="cpu")
    with pytest.raises(ValueError, match="capacity 10000"):
        restore_replay_buffer(smaller, snapshot.replay_buffer)
    other_obs = gymnasium.spaces.Box(-1.0, 1.0, shape=(5,))
    mismatched = ReplayBuffer(10_000, other_obs, env.action_space, device="cpu")
    with pytest.raises(ValueError, match="'observations' has shape"):
        restore_replay_buffer(mismatched, snapshot.replay_buffer)
    with pytest.raises(ValueError, match="unreadable"):
        restore_replay_buffer(smaller, b"not an npz")
    # Object arrays would need pickle: refused, even in an otherwise complete archive.
    with np.load(io.BytesIO(snapshot.replay_buffer)) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["rewards"] = np.array([{"evil": 1}], dtype=object)
    pickled = io.BytesIO()
    np.savez(pickled, **arrays)
    with pytest.raises(ValueError, match="unreadable"):
        restore_replay_buffer(buffer_of(snapshot), pickled.getvalue())
    # A round trip through bytes is exact.
    restored = buffer_of(snapshot)
    assert replay_buffer_to_bytes(restored) == snapshot.replay_buffer


def test_continuing_rejects_a_different_network(first_round) -> None:
    snapshot, _ = first_round
    with pytest.raises(ValueError, match="don't fit"):
        train_policy(
            env_factory=pendulum,
            config=SMALL.replace(net_arch=(32,)),
            timesteps=10,
            reward_fn=None,
            previous=snapshot,
        )


# --- PPO on a discrete environment -------------------------------------------------------------


def test_ppo_for_discrete_actions() -> None:
    def cartpole() -> gymnasium.Env:
        return gymnasium.make("CartPole-v1", max_episode_steps=100)

    config = PolicyConfig(ppo_n_steps=128, ppo_batch_size=64, ppo_n_epochs=2)
    snapshot = train_policy(env_factory=cartpole, config=config, timesteps=256, reward_fn=None)
    assert snapshot.algorithm == "ppo" and snapshot.replay_buffer is None
    assert snapshot.num_timesteps == 256

    def upright(features: np.ndarray) -> np.ndarray:  # columns: x, x', θ, θ', action
        return (1.0 - np.abs(features[:, 2])).astype(np.float32)

    continued = train_policy(env_factory=cartpole, config=config, timesteps=100, reward_fn=upright, previous=snapshot)
    assert continued.num_timesteps == 256 + 128  # whole updates of ppo_n_steps

    model = load_model(continued, cartpole())
    result = evaluate_policy(model, env_factory=cartpole, episodes=2, rng=np.random.default_rng(0), reward_fn=upright)
    assert result.learned_returns is not None and all(length > 0 for length in result.episode_lengths)
    action = SB3Policy(model, name="ppo", noise=0.5)(cartpole().reset(seed=0)[0], np.random.default_rng(0))
    assert action.shape == () and int(action) in (0, 1)


# --- rollouts ----------------------------------------------------------------------------------


def test_sb3_policy_makes_reproducible_resimulable_rollouts(first_round) -> None:
    snapshot, _ = first_round
    model = load_model(snapshot, pendulum())

    def rollout(noise: float, rng_seed: int):
        policy = SB3Policy(model, name="checkpoint:7", noise=noise)
        return run_rollout(ENV_ID, policy=policy, seed=3, steps=40, rng=np.random.default_rng(rng_seed))

    first, again, other = rollout(0.1, 0), rollout(0.1, 0), rollout(0.1, 1)
    assert first.policy == "checkpoint:7"
    np.testing.assert_array_equal(first.actions, again.actions)
    assert not np.array_equal(first.actions, other.actions)
    assert np.all(np.abs(first.actions) <= 2.0)
    np.testing.assert_array_equal(resimulate(ENV_ID, seed=3, actions=first.actions), first.observations)
    # Without noise the actions are the deterministic predictions.
    clean = rollout(0.0, 0)
    predicted = np.stack([model.predict(obs, deterministic=True)[0] for obs in clean.observations[:-1]])
    np.testing.assert_allclose(clean.actions, predicted, rtol=0, atol=1e-6)


# --- it learns ---------------------------------------------------------------------------------


def random_mean_return(episodes: int, rng: np.random.Generator) -> float:
    env = pendulum()
    returns = []
    for _ in range(episodes):
        env.reset(seed=int(rng.integers(0, 2**31)))
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(-2.0, 2.0, size=1).astype(np.float32))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_sac_learns_to_swing_up_pendulum() -> None:
    """~15 s: 4000 steps (1000 random, then one gradient step each) on the true reward."""
    snapshot = train_policy(env_factory=pendulum, config=PolicyConfig(seed=0), timesteps=4000, reward_fn=None)
    model = load_model(snapshot, pendulum())
    trained = evaluate_policy(model, env_factory=pendulum, episodes=10, rng=np.random.default_rng(0), reward_fn=None)
    random_mean = random_mean_return(10, np.random.default_rng(0))
    assert random_mean < -900  # sanity: random play is ≈ -1200
    # Measured: about -175 with this seed (others -190 to -300), so the margin is wide.
    assert trained.true_mean > random_mean + 600
    assert trained.true_mean > -500
