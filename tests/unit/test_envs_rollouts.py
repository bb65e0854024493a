"""Presets, factor extraction, scripted policies, rollouts, storage and segmentation (no Django)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import gymnasium
import numpy as np
import pytest

from trainer.core.envs import (
    EXTRACTORS,
    PRESETS,
    UnknownEnvironment,
    factor_values,
    get_preset,
    make_env,
)
from trainer.core.rollouts import (
    RolloutData,
    Segment,
    load_npz,
    resimulate,
    run_rollout,
    save_npz,
    segment_features,
    segment_totals,
    segments,
)
from trainer.core.scripted import UnknownPolicy, make_policy

PENDULUM = "Pendulum-v1"
CHEETAH = "HalfCheetah-v5"


def _action_space(env_id: str) -> gymnasium.Space:
    env = make_env(env_id)
    try:
        return env.action_space
    finally:
        env.close()


def _rollout(env_id: str, spec: str, *, seed: int = 0, steps: int = 200, **env_kwargs: object) -> RolloutData:
    policy = make_policy(spec, _action_space(env_id))
    return run_rollout(
        env_id,
        policy=policy,
        seed=seed,
        steps=steps,
        rng=np.random.default_rng(seed + 1000),
        env_kwargs=env_kwargs,
    )


# --- presets ---------------------------------------------------------------------------------------


def test_presets_define_exactly_the_agreed_factors() -> None:
    assert set(PRESETS) == {PENDULUM, CHEETAH}
    pendulum = get_preset(PENDULUM)
    assert [f.key for f in pendulum.factors] == ["angle_sq", "angular_velocity_sq", "torque_sq"]
    assert [f.direction for f in pendulum.factors] == [-1, -1, -1]
    cheetah = get_preset(CHEETAH)
    assert [f.key for f in cheetah.factors] == ["forward_velocity", "control_cost"]
    assert [f.direction for f in cheetah.factors] == [1, -1]
    assert (pendulum.segment_steps, pendulum.episode_steps) == (50, 200)
    assert cheetah.segment_steps == 50


@pytest.mark.parametrize("env_id", sorted(PRESETS))
def test_every_preset_is_consistent(env_id: str) -> None:
    preset = get_preset(env_id)
    assert preset.env_id == env_id
    hash(preset)  # usable as a dict key or cache key
    assert len({f.key for f in preset.factors}) == len(preset.factors)
    for factor in preset.factors:
        assert factor.source in EXTRACTORS
        assert factor.label and factor.description
    assert preset.render_width % 2 == 0 and preset.render_height % 2 == 0
    assert preset.segment_steps <= preset.episode_steps
    action_space = _action_space(env_id)
    for spec in preset.scripted_policies:
        assert make_policy(spec, action_space).name == spec


def test_unknown_environment_is_a_clear_value_error() -> None:
    with pytest.raises(UnknownEnvironment, match=r"NoSuchEnv-v1.*not a registered Gymnasium id.*HalfCheetah-v5"):
        get_preset("NoSuchEnv-v1")
    assert get_preset("CartPole-v1").env_id == "CartPole-v1"  # any registered id gets a generic preset
    assert issubclass(UnknownEnvironment, ValueError)


def test_factor_values_follow_preset_order() -> None:
    preset = get_preset(PENDULUM)
    theta, theta_dot, torque = 0.5, -2.0, 3.0  # torque beyond the limit is clipped to 2
    obs = np.array([np.cos(theta), np.sin(theta), theta_dot])
    values = factor_values(preset, obs, np.array([torque]), obs, {})
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, [theta**2, theta_dot**2, 4.0])


# --- the factors reproduce each environment's reward ----------------------------------------------


@pytest.mark.parametrize("spec", ["random", "pendulum_swingup:0.0", "pendulum_swingup:1.0"])
def test_pendulum_reward_is_exactly_the_weighted_factors(spec: str) -> None:
    data = _rollout(PENDULUM, spec, seed=7)
    angle_sq, velocity_sq, torque_sq = data.factors.T
    np.testing.assert_allclose(-(angle_sq + 0.1 * velocity_sq + 0.001 * torque_sq), data.rewards, rtol=0, atol=1e-5)
    # The random policy's actions stay inside the box; a scripted one with noise is clipped too.
    assert np.all(np.abs(data.actions) <= 2.0)


@pytest.mark.parametrize("env_kwargs", [{}, {"forward_reward_weight": 2.0, "ctrl_cost_weight": 0.3}])
def test_half_cheetah_reward_is_forward_velocity_minus_control_cost(env_kwargs: dict[str, float]) -> None:
    data = _rollout(CHEETAH, "halfcheetah_gait:0.1", seed=3, steps=60, **env_kwargs)
    forward_velocity, control_cost = data.factors.T
    weight = env_kwargs.get("forward_reward_weight", 1.0)
    np.testing.assert_allclose(weight * forward_velocity - control_cost, data.rewards, rtol=0, atol=1e-9)
    ctrl_weight = env_kwargs.get("ctrl_cost_weight", 0.1)
    np.testing.assert_allclose(control_cost, ctrl_weight * np.sum(data.actions**2, axis=1), rtol=1e-12)


# --- policies --------------------------------------------------------------------------------------


def test_random_policy_draws_from_the_given_rng_within_bounds() -> None:
    space = _action_space(CHEETAH)
    assert isinstance(space, gymnasium.spaces.Box)
    policy = make_policy("random", space)
    obs = np.zeros(17)
    first = [policy(obs, np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    draws = np.stack([policy(obs, np.random.default_rng(seed)) for seed in range(200)])
    assert np.all(draws >= space.low) and np.all(draws <= space.high)
    assert draws.std(axis=0).min() > 0.4  # uniform on [-1, 1] has std 0.577


@pytest.mark.parametrize(
    "spec", ["walk", "random:0.5", "pendulum_swingup:abc", "pendulum_swingup:-1", "pendulum_swingup:nan"]
)
def test_bad_policy_specs_are_rejected(spec: str) -> None:
    with pytest.raises(UnknownPolicy):
        make_policy(spec, _action_space(PENDULUM))


def test_scripted_policy_must_fit_the_action_space() -> None:
    with pytest.raises(UnknownPolicy, match="shape"):
        make_policy("halfcheetah_gait:0.0", _action_space(PENDULUM))


def _mean_return(env_id: str, spec: str, seeds: range) -> float:
    return float(np.mean([_rollout(env_id, spec, seed=seed).true_return for seed in seeds]))


def test_pendulum_swingup_balances_and_noise_makes_it_worse() -> None:
    seeds = range(12)
    clean = _mean_return(PENDULUM, "pendulum_swingup:0.0", seeds)
    noisy = _mean_return(PENDULUM, "pendulum_swingup:2.0", seeds)
    random = _mean_return(PENDULUM, "random", seeds)
    assert clean > -200, clean  # measured ≈ -140 over 30 seeds
    assert clean > noisy > random
    assert random < -800  # measured ≈ -1200


def test_half_cheetah_gait_runs_forward_faster_than_random() -> None:
    gait = [_rollout(CHEETAH, "halfcheetah_gait:0.0", seed=seed, steps=100) for seed in range(3)]
    random = [_rollout(CHEETAH, "random", seed=seed, steps=100) for seed in range(3)]
    gait_speed = np.mean([data.factors[:, 0].mean() for data in gait])
    random_speed = np.mean([data.factors[:, 0].mean() for data in random])
    assert gait_speed > 0.5 > random_speed


# --- rollouts --------------------------------------------------------------------------------------


def test_rollout_shapes_and_time_limit() -> None:
    data = _rollout(PENDULUM, "pendulum_swingup:1.0", seed=1, steps=120)
    assert data.actions.shape == (120, 1)
    assert data.observations.shape == (121, 3)
    assert data.factors.shape == (120, 3)
    assert data.rewards.shape == (120,)
    assert data.true_return == pytest.approx(data.rewards.sum())
    assert (data.terminated, data.truncated) == (False, True)
    assert data.policy == "pendulum_swingup:1.0"
    assert data.env_id == PENDULUM and data.seed == 1
    # Observations line up with factors: row t is the state before action t.
    np.testing.assert_allclose(data.factors[:, 1], data.observations[:-1, 2].astype(np.float64) ** 2)


def test_same_seed_and_rng_give_the_same_rollout() -> None:
    first = _rollout(PENDULUM, "pendulum_swingup:1.0", seed=4, steps=50)
    second = _rollout(PENDULUM, "pendulum_swingup:1.0", seed=4, steps=50)
    np.testing.assert_array_equal(first.actions, second.actions)
    np.testing.assert_array_equal(first.observations, second.observations)


def test_open_loop_gait_restarts_its_clock_every_rollout() -> None:
    policy = make_policy("halfcheetah_gait:0.0", _action_space(CHEETAH))
    runs = [run_rollout(CHEETAH, policy=policy, seed=0, steps=10, rng=np.random.default_rng(0)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)


@pytest.mark.parametrize(("env_id", "spec"), [(PENDULUM, "random"), (CHEETAH, "halfcheetah_gait:0.2")])
def test_resimulation_reproduces_observations_bitwise(env_id: str, spec: str) -> None:
    data = _rollout(env_id, spec, seed=11, steps=150)
    replayed = resimulate(env_id, seed=data.seed, actions=data.actions, env_kwargs=data.env_kwargs)
    # Exact equality holds for MuJoCo too (same process, same build); no tolerance needed.
    np.testing.assert_array_equal(replayed, data.observations)
    assert replayed.dtype == data.observations.dtype


# --- storage ---------------------------------------------------------------------------------------


def test_npz_round_trip_preserves_everything() -> None:
    data = _rollout(CHEETAH, "halfcheetah_gait:0.1", seed=2, steps=30, ctrl_cost_weight=0.2)
    raw = save_npz(data)
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        assert json.loads(str(archive["metadata"][0]))["policy"] == "halfcheetah_gait:0.1"
    loaded = load_npz(raw)
    for name in ("actions", "observations", "factors", "rewards"):
        original, restored = getattr(data, name), getattr(loaded, name)
        np.testing.assert_array_equal(restored, original)
        assert restored.dtype == original.dtype
    assert (loaded.env_id, loaded.env_kwargs, loaded.seed, loaded.policy) == (
        CHEETAH,
        {"ctrl_cost_weight": 0.2},
        2,
        "halfcheetah_gait:0.1",
    )
    assert (loaded.terminated, loaded.truncated) == (data.terminated, data.truncated)
    assert loaded.true_return == data.true_return


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # numpy's stub fears a key named allow_pickle
    return buffer.getvalue()


def _valid_arrays() -> dict[str, np.ndarray]:
    data = _rollout(PENDULUM, "random", seed=0, steps=5)
    with np.load(io.BytesIO(save_npz(data)), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("rewards"), "missing arrays"),
        (lambda a: a.update(observations=a["observations"][:-1]), "inconsistent lengths"),
        (lambda a: a.update(metadata=np.array(["{not json"])), "not valid JSON"),
        (lambda a: a.update(metadata=np.array([json.dumps({"format_version": 99})])), "format_version"),
        (lambda a: a.update(metadata=np.array([json.dumps({"format_version": 1, "env_id": 3})])), "env_id"),
        (lambda a: a.update(actions=np.array([{"x": 1}] * 5, dtype=object)), "cannot read archive"),
        (lambda a: a.update(rewards=np.array(["a"] * 5)), "numeric"),
    ],
)
def test_malformed_npz_raises_value_error(mutate: Callable[[dict[str, np.ndarray]], object], message: str) -> None:
    arrays = _valid_arrays()
    mutate(arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(_npz(**arrays))


def test_non_npz_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="cannot read archive"):
        load_npz(b"definitely not a zip file")


# --- segments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_steps", "segment_steps", "expected_starts"),
    [(200, 50, [0, 50, 100, 150]), (120, 50, [0, 50]), (50, 50, [0]), (49, 50, []), (0, 50, [])],
)
def test_segments_are_consecutive_full_length_and_drop_the_tail(
    n_steps: int, segment_steps: int, expected_starts: list[int]
) -> None:
    assert segments(n_steps, segment_steps) == [Segment(start, segment_steps) for start in expected_starts]


def test_segment_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        segments(100, 0)


def test_segment_totals_and_features() -> None:
    data = _rollout(PENDULUM, "pendulum_swingup:1.0", seed=5, steps=100)
    seg = segments(data.n_steps, 50)[1]
    np.testing.assert_allclose(segment_totals(data.factors, seg), data.factors[50:100].sum(axis=0))
    features = segment_features(data, seg)
    assert features.shape == (50, 3 + 1) and features.dtype == np.float32
    np.testing.assert_array_equal(features[:, :3], data.observations[50:100])
    np.testing.assert_array_equal(features[:, 3:], data.actions[50:100])
    with pytest.raises(ValueError, match="does not fit"):
        segment_totals(data.factors, Segment(80, 50))


def test_kwarg_specs_are_core_data_that_labeling_checks_by_their_attributes():
    from types import SimpleNamespace

    from labeling.environments import kwarg_problem
    from trainer.core.envs import KwargSpec

    with pytest.raises(ValueError, match="kind"):
        KwargSpec("path")
    spec = KwargSpec("float", 0.0, 10.0)
    assert kwarg_problem(spec, 5.0) is None
    assert kwarg_problem(spec, 11.0) == "must be between 0 and 10"
    # Any object with the same attributes will do: labeling never imports trainer.
    duck = SimpleNamespace(kind="choice", minimum=None, maximum=None, choices=("a", "b"))
    assert kwarg_problem(duck, "a") is None
    assert kwarg_problem(duck, "x.xml") == "file paths are not allowed"
