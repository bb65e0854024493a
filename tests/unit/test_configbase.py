"""The core's three config dataclasses share one owner for their JSON plumbing and validation."""

from __future__ import annotations

import pytest

from trainer.core.configbase import ConfigBase, is_number
from trainer.core.loop_settings import LoopSettings
from trainer.core.policy.config import PolicyConfig
from trainer.core.reward.config import RewardModelConfig

CONFIGS = [RewardModelConfig, PolicyConfig, LoopSettings]


@pytest.mark.parametrize("cls", CONFIGS)
def test_round_trip_merge_and_unknown_keys(cls) -> None:
    assert issubclass(cls, ConfigBase)
    default = cls()
    assert cls.from_dict(default.to_dict()) == default
    assert default.merged({"seed": 5}) == default.replace(seed=5) and default.merged(None) == default
    with pytest.raises(ValueError, match="unknown"):
        cls.from_dict({"no_such_field": 1})
    with pytest.raises(ValueError, match="seed"):
        cls.from_dict({"seed": True})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match=r"rollouts must be .*; label_budget must be"):
        LoopSettings(rollouts=0, label_budget=-1)
    with pytest.raises(ValueError, match=r"^invalid PolicyConfig: .*gamma.*device"):
        PolicyConfig(gamma=2.0, device="mps")


def test_numbers_too_large_for_a_float_are_not_numbers() -> None:
    assert not is_number(10**400) and not is_number(True) and is_number(3) and not is_number(float("inf"))
