"""Active query selection (pure numpy) and the loop's settings."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.core.loop_settings import LoopSettings
from trainer.core.query_selection import candidate_pairs, select_pairs


@pytest.mark.parametrize("n_clips, count", [(10, 20), (10, 45), (10, 1000), (3000, 500)])
def test_candidate_pairs_are_distinct_ordered_and_in_range(n_clips, count):
    pairs = candidate_pairs(n_clips, count, np.random.default_rng(0))
    assert len(pairs) == min(count, n_clips * (n_clips - 1) // 2)
    assert (pairs[:, 0] < pairs[:, 1]).all() and pairs.min() >= 0 and pairs.max() < n_clips
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)


def test_candidate_pairs_are_uniform():
    counts = np.zeros((6, 6))
    rng = np.random.default_rng(1)
    for _ in range(3000):
        i, j = candidate_pairs(6, 1, rng)[0]
        counts[i, j] += 1
    observed = counts[np.triu_indices(6, k=1)]
    assert observed.min() > 140 and observed.max() < 260  # 200 expected for each of the 15 pairs


def test_active_selection_keeps_the_most_uncertain_pairs_within_the_per_clip_cap():
    rng = np.random.default_rng(2)
    uncertainty = rng.random((40, 40))

    pairs, scores = select_pairs(
        40, 20, rng, scores=lambda c: uncertainty[c[:, 0], c[:, 1]], oversample=10, max_per_clip=2
    )
    assert len(pairs) == 20 and scores is not None
    assert np.bincount(pairs.ravel()).max() <= 2
    assert np.all(np.diff(scores) <= 0)  # best first
    # The chosen ones beat a typical candidate by far.
    assert scores.mean() > 0.8


def test_one_outlier_clip_cannot_take_the_whole_budget():
    # Clip 0 makes every pair it is in maximally uncertain.
    pairs, _ = select_pairs(
        30, 10, np.random.default_rng(3), scores=lambda c: (c == 0).any(axis=1).astype(float), max_per_clip=3
    )
    assert (pairs == 0).any(axis=1).sum() == 3


def test_without_scores_selection_is_uniform_and_seeded():
    first, scores = select_pairs(30, 10, np.random.default_rng(4))
    again, _ = select_pairs(30, 10, np.random.default_rng(4))
    assert scores is None and len(first) == 10
    np.testing.assert_array_equal(first, again)


def test_loop_settings_round_trip_and_name_what_is_wrong():
    settings = LoopSettings.from_dict({"policy_timesteps": 500, "policy": {"algorithm": "sac"}})
    assert LoopSettings.from_dict(settings.to_dict()) == settings
    assert settings.policy_config().algorithm == "sac"
    for bad, words in [
        ({"nonsense": 1}, "unknown loop setting(s): nonsense"),
        ({"label_budget": -1}, "label_budget"),
        ({"query_selection": "clever"}, "query_selection"),
        ({"policy_reward": "imagined"}, "policy_reward"),
        ({"reward_config": {"hidden_sizes": "big"}}, "hidden_sizes"),
        ({"policy": {"learning_rate": -1}}, "learning_rate"),
    ]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            LoopSettings.from_dict(bad)
