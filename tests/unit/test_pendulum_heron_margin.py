"""The Pendulum preset's HERON margin on the angle (issue 13).

With σ = 1 the angle margin is one standard deviation of the pool's clip totals, and a pool that spans hanging
(angle² ≈ π² per step) to balanced (≈ 0) has a wide one: a clip held 1.1 rad off upright tied with a balanced clip
on the angle, the velocity level decided it instead, the first reward model was flat near the top and the first
policy swung around it (bench/README.md, "HERON's first policy"). The preset's σ makes the angle decide such a pair.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.core.envs import get_preset, make_env
from trainer.core.heron import compare, margins
from trainer.core.rollouts import run_rollout, segment_totals, segments
from trainer.core.scripted import make_policy

PENDULUM = "Pendulum-v1"
CLIP = 50


def initial_pool_totals(seed: int) -> np.ndarray:
    """Factor totals of a default initial pool: 24 rollouts of 200 steps, random play and the scripted swing-up at
    the preset's noise levels in turn, cut into 50-step clips (as trainer.clip_pipeline makes it)."""
    preset = get_preset(PENDULUM)
    space = make_env(PENDULUM).action_space
    rng = np.random.default_rng(seed)
    totals: list[np.ndarray] = []
    for index in range(24):
        policy = make_policy(preset.scripted_policies[index % len(preset.scripted_policies)], space)
        rollout = run_rollout(PENDULUM, policy=policy, seed=int(rng.integers(2**31)), steps=200, rng=rng)
        totals.extend(segment_totals(rollout.factors, segment) for segment in segments(200, CLIP))
    return np.asarray(totals)


def held_clip(angle: float) -> np.ndarray:
    """Factor totals of a clip held still at ``angle`` from upright with no torque: (angle², velocity², torque²)."""
    return np.array([[CLIP * angle**2, 0.0, 0.0]])


@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_beats_a_clip_held_one_radian_off_on_the_angle(seed: int) -> None:
    preset = get_preset(PENDULUM)
    assert [factor.key for factor in preset.factors] == ["angle_sq", "angular_velocity_sq", "torque_sq"]
    pool = initial_pool_totals(seed)
    signs = np.array([factor.direction for factor in preset.factors])
    levels = [[0], [1], [2]]

    def decide(sigmas: np.ndarray) -> tuple[int, int]:
        label, level = compare(
            held_clip(0.0), held_clip(1.1), levels=levels, signs=signs, margins=margins(pool, sigmas)
        )
        return int(label[0]), int(level[0])

    preset_sigmas = np.array([factor.sigma for factor in preset.factors])
    assert decide(preset_sigmas) == (1, 0)  # balanced preferred, on the angle
    assert decide(np.ones(3)) == (0, -1)  # σ = 1: a tie on every level — the failure the preset's σ removes
