"""Generic presets for any Gymnasium id, discrete rollouts end to end, and task definitions (no Django)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.core import envs, rollouts
from trainer.core.env_families import CLASSIC_CONTROL, MUJOCO, family_of, generic_preset
from trainer.core.scripted import UnknownPolicy, make_policy


def test_families_and_their_argument_allow_lists():
    assert family_of("CartPole-v1") == CLASSIC_CONTROL and family_of("Walker2d-v5") == MUJOCO
    hopper = generic_preset("Hopper-v5")
    assert {"healthy_reward", "terminate_when_unhealthy", "ctrl_cost_weight"} <= set(hopper.allowed_kwargs)
    assert "contact_cost_weight" not in hopper.allowed_kwargs  # Hopper's constructor takes none
    assert "contact_cost_weight" in generic_preset("Ant-v5").allowed_kwargs
    assert "xml_file" not in hopper.allowed_kwargs and "xml_file" not in generic_preset("Ant-v5").allowed_kwargs
    assert hopper.render_kwargs == {"camera_name": "track"} and hopper.renders_at_requested_size
    cartpole = generic_preset("CartPole-v1")
    assert not cartpole.renders_at_requested_size and cartpole.allowed_kwargs.keys() <= {"sutton_barto_reward"}
    assert [f.source for f in cartpole.factors] == ["reward"]


def test_a_discrete_rollout_stores_int_actions_and_round_trips():
    rng = np.random.default_rng(0)
    space = envs.make_env("CartPole-v1").action_space
    data = rollouts.run_rollout("CartPole-v1", policy=make_policy("random", space), seed=3, steps=30, rng=rng)
    assert data.actions.dtype == np.int64 and data.actions.shape == (data.n_steps, 1)
    assert data.action_space == {"kind": "discrete", "n": 2}
    loaded = rollouts.load_npz(rollouts.save_npz(data))
    assert loaded.discrete_actions == 2
    np.testing.assert_array_equal(loaded.actions, data.actions)
    replayed = rollouts.resimulate("CartPole-v1", seed=3, actions=loaded.actions)
    np.testing.assert_array_equal(replayed, data.observations)
    features = rollouts.segment_features(loaded, rollouts.Segment(0, 5))
    assert features.shape == (5, 4 + 2)
    np.testing.assert_array_equal(features[:, 4:].sum(axis=1), np.ones(5))
    np.testing.assert_array_equal(features[:, 4 + 1], data.actions[:5, 0])


def test_policies_for_discrete_and_any_box():
    cartpole = envs.make_env("CartPole-v1").action_space
    with pytest.raises(UnknownPolicy, match="Discrete"):
        make_policy("zero:0.1", cartpole)
    hopper = envs.make_env("Hopper-v5").action_space
    action = make_policy("zero:0.0", hopper)(np.zeros(11), np.random.default_rng(0))
    np.testing.assert_array_equal(action, np.zeros(3))


def test_a_task_definition_keeps_preset_sources_and_checks_new_ones():
    task = envs.task_definition(
        "Pendulum-v1",
        factors=(envs.FactorSpec("angle_sq", "Angle", "", "", -1, "angle_sq"),),
        episode_steps=80,
    )
    assert task.factors[0].source == "pendulum.angle_sq" and task.episode_steps == 80
    with pytest.raises(envs.UnknownExtractor):
        envs.task_definition("CartPole-v1", factors=(envs.FactorSpec("x", "x", "", "", 1, "obs:a"),))
