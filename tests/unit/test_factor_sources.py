"""Factor sources: the short strings a spec uses to say where a factor's per-step value comes from."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.core.envs import EXTRACTORS
from trainer.core.factor_sources import Step, parse_source

STEP = Step(
    obs=np.array([3.0, 4.0, -1.0]),
    action=np.array([0.5, -2.0]),
    next_obs=np.array([1.0, 2.0, 2.0]),
    reward=-1.5,
    info={"x_velocity": 2.25, "reward_ctrl": np.float32(-0.1)},
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("reward", -1.5),
        ("reward|neg", 1.5),
        ("info:x_velocity", 2.25),
        ("info:x_velocity|sq", 2.25**2),
        ("obs:2", -1.0),
        ("obs:2|abs", 1.0),
        ("next_obs:2", 2.0),
        ("obs_norm", np.sqrt(26.0)),
        ("obs_norm:0:2", 5.0),
        ("action:1", -2.0),
        ("action_norm", np.sqrt(4.25)),
        ("action_sq", 4.25),
        ("mujoco.forward_velocity", 2.25),
        ("extractor:mujoco.control_cost", 0.1),
        ("action:1|sq|neg", -4.0),
    ],
)
def test_each_source_reads_what_it_says(text, value):
    assert parse_source(text, EXTRACTORS)(STEP) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "required"),
        ("obs:x", "element index"),
        ("obs:01", "element index"),
        ("obs_norm:3:1", "empty"),
        ("obs_norm:1", "two indices"),
        ("info:", "must be a name"),
        ("info:a b", "must be a name"),
        ("reward|cube", "unknown transform"),
        ("os.system", "unknown factor source"),
        ("x" * 101, "at most 100"),
    ],
)
def test_bad_sources_are_refused_with_a_reason(text, words):
    with pytest.raises(ValueError, match=words):
        parse_source(text, EXTRACTORS)


def test_reading_past_the_data_says_so():
    with pytest.raises(ValueError, match="element 7 does not exist"):
        parse_source("obs:7")(STEP)
    with pytest.raises(ValueError, match="has no 'y_velocity'"):
        parse_source("info:y_velocity")(STEP)


def test_a_discrete_action_reads_as_its_index():
    step = Step(obs=np.zeros(4), action=np.array(1), next_obs=np.zeros(4), reward=1.0, info={})
    assert parse_source("action:0")(step) == 1.0
