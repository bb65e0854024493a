"""Tests of the pure-numpy HERON core (trainer/core/heron.py): comparator properties, labelling,
pair sampling and ranking agreement. No Django, no torch: runs in a few seconds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.core import heron
from trainer.core.heron import Ranking

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# --------------------------------------------------------------------------------------------
# Strategies and an obviously-correct oracle
# --------------------------------------------------------------------------------------------


@st.composite
def comparison_problems(draw: st.DrawFn, *, allow_groups: bool = True) -> dict:
    """A random compare() problem on small integer-valued floats, so exact ties, exact
    ``d == delta`` and constant factors all occur often."""
    n_factors = draw(st.integers(1, 5))
    n_pairs = draw(st.integers(0, 20))
    order = draw(st.permutations(range(n_factors)))
    n_ranked = draw(st.integers(1, n_factors))
    ranked = list(order[:n_ranked])
    levels: list[tuple[int, ...]] = []
    while ranked:
        size = draw(st.integers(1, len(ranked))) if allow_groups else 1
        levels.append(tuple(ranked[:size]))
        ranked = ranked[size:]
    small_ints = st.integers(-4, 4)
    a = np.array(draw(st.lists(small_ints, min_size=n_pairs * n_factors, max_size=n_pairs * n_factors)))
    b = np.array(draw(st.lists(small_ints, min_size=n_pairs * n_factors, max_size=n_pairs * n_factors)))
    signs = np.array(draw(st.lists(st.sampled_from([-1, 1]), min_size=n_factors, max_size=n_factors)))
    # Powers of two keep every standardised difference and every group mean exactly representable.
    scales = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n_factors, max_size=n_factors)))
    sigmas = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=n_factors, max_size=n_factors)))
    return {
        "a": a.reshape(n_pairs, n_factors).astype(np.float64),
        "b": b.reshape(n_pairs, n_factors).astype(np.float64),
        "levels": levels,
        "signs": signs,
        "margins": sigmas * scales,
        "scales": scales,
        "sigmas": sigmas,
    }


def call_compare(problem: dict, **overrides: object) -> tuple[np.ndarray, np.ndarray]:
    arguments = {**problem, **overrides}
    return heron.compare(
        arguments["a"],
        arguments["b"],
        levels=arguments["levels"],
        signs=arguments["signs"],
        margins=arguments["margins"],
        scales=arguments["scales"],
        sigmas=arguments["sigmas"],
    )


def oracle_compare(problem: dict) -> tuple[list[int], list[int]]:
    """The specification written as a per-pair Python loop (slow, obviously right)."""
    labels, levels = [], []
    for row_a, row_b in zip(problem["a"], problem["b"], strict=True):
        label, deciding = 0, -1
        for index, group in enumerate(problem["levels"]):
            if len(group) == 1:
                (k,) = group
                d = problem["signs"][k] * (row_a[k] - row_b[k])
                threshold = problem["margins"][k]
            else:
                d = sum(
                    problem["signs"][k] * (row_a[k] - row_b[k]) / problem["scales"][k]
                    for k in group
                    if problem["scales"][k] > 0
                )
                threshold = float(np.mean([problem["sigmas"][k] for k in group]))
            if d > threshold:
                label, deciding = 1, index
                break
            if d < -threshold:
                label, deciding = -1, index
                break
        labels.append(label)
        levels.append(deciding)
    return labels, levels


# --------------------------------------------------------------------------------------------
# Comparator properties
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(comparison_problems())
def test_compare_matches_the_per_pair_specification(problem: dict) -> None:
    label, level = call_compare(problem)
    expected_label, expected_level = oracle_compare(problem)
    assert label.dtype == np.int8 and level.dtype == np.int16
    assert label.tolist() == expected_label
    assert level.tolist() == expected_level


@PROPERTY_SETTINGS
@given(comparison_problems())
def test_swapping_a_and_b_negates_every_label_and_keeps_the_level(problem: dict) -> None:
    label, level = call_compare(problem)
    swapped_label, swapped_level = call_compare(problem, a=problem["b"], b=problem["a"])
    np.testing.assert_array_equal(swapped_label, -label)
    np.testing.assert_array_equal(swapped_level, level)


@PROPERTY_SETTINGS
@given(comparison_problems())
def test_a_clip_never_beats_itself(problem: dict) -> None:
    label, level = call_compare(problem, b=problem["a"])
    assert not label.any()
    assert np.all(level == -1)


@PROPERTY_SETTINGS
@given(comparison_problems(), st.data())
def test_raising_a_margin_never_turns_a_tie_into_a_decision(problem: dict, data: st.DataObject) -> None:
    n_factors = problem["a"].shape[1]
    raise_by = np.array(
        data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=n_factors, max_size=n_factors))
    )
    label, _ = call_compare(problem)
    raised_label, _ = call_compare(problem, margins=problem["margins"] + raise_by, sigmas=problem["sigmas"] + raise_by)
    assert not np.any((label == 0) & (raised_label != 0))


@PROPERTY_SETTINGS
@given(comparison_problems(), st.integers(0, 2**32 - 1))
def test_a_decided_pair_ignores_less_important_factors(problem: dict, seed: int) -> None:
    label, level = call_compare(problem)
    n_pairs, n_factors = problem["a"].shape
    level_of_factor = np.full(n_factors, len(problem["levels"]))  # unranked: after every level
    for index, group in enumerate(problem["levels"]):
        level_of_factor[list(group)] = index
    # Per pair, the factors strictly less important than its deciding level (ties: only unranked).
    last_level_that_matters = np.where(level >= 0, level, len(problem["levels"]) - 1)
    changeable = level_of_factor[None, :] > last_level_that_matters[:, None]
    rng = np.random.default_rng(seed)
    noise_a = rng.integers(-50, 50, size=(n_pairs, n_factors)).astype(np.float64)
    noise_b = rng.integers(-50, 50, size=(n_pairs, n_factors)).astype(np.float64)
    changed_label, changed_level = call_compare(
        problem,
        a=np.where(changeable, noise_a, problem["a"]),
        b=np.where(changeable, noise_b, problem["b"]),
    )
    np.testing.assert_array_equal(changed_label, label)
    np.testing.assert_array_equal(changed_level, level)


@PROPERTY_SETTINGS
@given(comparison_problems(allow_groups=False), st.sampled_from([-1, 1]))
def test_a_difference_equal_to_the_margin_does_not_decide(problem: dict, direction: int) -> None:
    """Force d == +-delta exactly on the first level: the pair must fall through to the next level,
    exactly as if the first level did not exist."""
    first = problem["levels"][0][0]
    margin = problem["margins"][first]
    b = problem["b"].copy()
    b[:, first] = problem["a"][:, first] - direction * problem["signs"][first] * margin
    label, level = call_compare(problem, b=b)
    rest_label, rest_level = call_compare(problem, b=b, levels=problem["levels"][1:])
    np.testing.assert_array_equal(label, rest_label)
    np.testing.assert_array_equal(level, np.where(rest_level >= 0, rest_level + 1, -1))


def test_a_tie_group_score_equal_to_its_threshold_does_not_decide() -> None:
    # Group (0, 1), std 2 and 1, sigmas 1 and 2 -> threshold 1.5; d = 1/2 + 1/1 = 1.5.
    a = np.array([[1.0, 1.0], [1.0, 2.0]])
    b = np.zeros((2, 2))
    label, level = heron.compare(
        a,
        b,
        levels=[(0, 1)],
        signs=np.array([1, 1]),
        margins=np.array([2.0, 2.0]),
        scales=np.array([2.0, 1.0]),
        sigmas=np.array([1.0, 2.0]),
    )
    assert label.tolist() == [0, 1]
    assert level.tolist() == [-1, 0]


# --------------------------------------------------------------------------------------------
# Comparator examples
# --------------------------------------------------------------------------------------------


def test_margins_use_the_sample_standard_deviation() -> None:
    factors = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    delta = heron.margins(factors, np.array([0.5, 3.0]))
    # ddof=1: std of (0, 2, 4) is 2 (ddof=0 would give 1.633); a constant factor has margin 0.
    np.testing.assert_allclose(delta, [1.0, 0.0])


def test_signs_pick_the_preferred_direction() -> None:
    a, b = np.array([[3.0, 3.0]]), np.array([[1.0, 1.0]])
    for first, expected in ((0, 1), (1, -1)):
        label, _ = heron.compare(a, b, levels=[[first]], signs=np.array([1, -1]), margins=np.array([1.0, 1.0]))
        assert label.tolist() == [expected]


def test_tie_group_with_a_constant_factor() -> None:
    # Factor 2 is constant (std 0): it contributes nothing to the group score.
    a = np.array([[1.0, 0.0, 7.0], [0.0, 0.0, 7.0], [0.0, 1.0, 7.0]])
    b = np.array([[0.0, 0.0, 7.0], [0.0, 1.0, 7.0], [1.0, 0.0, 7.0]])
    scales = np.array([2.0, 1.0, 0.0])
    sigmas = np.array([0.2, 0.2, 0.4])
    common = {"signs": np.array([1, -1, 1]), "margins": sigmas * scales, "scales": scales}
    # Group threshold mean(0.2, 0.4) = 0.3. Pair 0: d = 1/2 > 0.3 -> a at level 0. Pair 1: d = 0,
    # then factor 1 (lower is better) prefers a at level 1. Pair 2: d = -1/2 -> b at level 0.
    label, level = heron.compare(a, b, levels=[(0, 2), (1,)], sigmas=sigmas, **common)
    assert label.tolist() == [1, 1, -1]
    assert level.tolist() == [0, 1, 0]
    # Without sigmas the constant factor's sigma cannot be recovered (0/0): it leaves the mean,
    # so the threshold is sigma_0 = 0.2 alone.
    label, _ = heron.compare(a[:1] * 0.25, b[:1], levels=[(0, 2)], **common)
    assert label.tolist() == [0]  # d = 0.125 <= 0.2
    label, _ = heron.compare(a[:1] * 0.5, b[:1], levels=[(0, 2)], **common)
    assert label.tolist() == [1]  # d = 0.25 > 0.2 (it would not beat 0.3)
    # A constant factor never decides on its own either.
    label, level = heron.compare(a, b, levels=[(2,), (0,)], sigmas=sigmas, **common)
    assert level.tolist() == [1, -1, 1]


def test_per_pair_margins_and_scales() -> None:
    a = np.array([[2.0], [2.0]])
    b = np.zeros((2, 1))
    label, _ = heron.compare(a, b, levels=[[0]], signs=np.array([1]), margins=np.array([[1.0], [3.0]]))
    assert label.tolist() == [1, 0]


def test_compare_on_no_pairs_and_no_levels() -> None:
    label, level = heron.compare(
        np.zeros((0, 2)), np.zeros((0, 2)), levels=[[0]], signs=np.array([1, 1]), margins=np.zeros(2)
    )
    assert label.shape == level.shape == (0,)
    label, level = heron.compare(
        np.ones((3, 2)), np.zeros((3, 2)), levels=[], signs=np.array([1, 1]), margins=np.zeros(2)
    )
    assert label.tolist() == [0, 0, 0] and level.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"levels": [(0, 1)], "scales": None}, "tie-group level needs `scales`"),
        ({"levels": [[0], [2]]}, "out of range"),
        ({"levels": [[0], [-1]]}, "out of range"),
        ({"levels": [[0], [0, 1]]}, "more than once"),
        ({"levels": [[0], []]}, "empty"),
        ({"levels": [[0.5]]}, "non-integer"),
        ({"b": np.zeros((3, 2))}, "same shape"),
        ({"a": np.zeros(4), "b": np.zeros(4)}, "same shape"),
        ({"signs": np.array([1])}, "signs must have shape"),
        ({"signs": np.array([1, 0])}, "signs must be"),
        ({"margins": np.zeros(3)}, "margins must have shape"),
        ({"margins": np.array([1.0, -1.0])}, "non-negative"),
        ({"margins": np.array([1.0, np.nan])}, "non-negative"),
        ({"scales": np.zeros((4, 2))}, "scales must have shape"),
        ({"sigmas": np.zeros(5)}, "sigmas must have shape"),
    ],
)
def test_compare_rejects_bad_input(overrides: dict, message: str) -> None:
    arguments = {
        "a": np.zeros((2, 2)),
        "b": np.zeros((2, 2)),
        "levels": [[0], [1]],
        "signs": np.array([1, -1]),
        "margins": np.zeros(2),
        "scales": np.ones(2),
        "sigmas": None,
        **overrides,
    }
    with pytest.raises(ValueError, match=message):
        heron.compare(
            arguments["a"],
            arguments["b"],
            levels=arguments["levels"],
            signs=arguments["signs"],
            margins=arguments["margins"],
            scales=arguments["scales"],
            sigmas=arguments["sigmas"],
        )


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


def test_ranking_normalises_and_validates() -> None:
    ranking = Ranking.from_levels([2, (0, 1), np.int64(3)], sigmas=np.array([0.1, 0.2, 0.3, 0.4]))
    assert ranking.levels == ((2,), (0, 1), (3,))
    assert ranking.sigmas == (0.1, 0.2, 0.3, 0.4)
    assert ranking.n_levels == 3 and ranking.factors == (2, 0, 1, 3)
    assert hash(ranking) == hash(Ranking.from_levels([[2], [0, 1], [3]], sigmas=[0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match="at least one level"):
        Ranking.from_levels([])
    with pytest.raises(ValueError, match="more than once"):
        Ranking.from_levels([0, (1, 0)])
    with pytest.raises(ValueError, match="non-negative"):
        Ranking.from_levels([0], sigmas=[-1.0])
    with pytest.raises(ValueError, match="out of range"):
        Ranking.from_levels([0, 3]).validate_for(3)
    with pytest.raises(ValueError, match="3 entries"):
        Ranking.from_levels([0], sigmas=[1.0]).validate_for(3)


# --------------------------------------------------------------------------------------------
# Pair sampling
# --------------------------------------------------------------------------------------------


def test_sample_pairs_returns_every_pair_under_the_cap() -> None:
    rng = np.random.default_rng(0)
    pairs = heron.sample_pairs(30, cap=435, rng=rng)
    assert pairs.dtype == np.int64
    np.testing.assert_array_equal(pairs, np.column_stack(np.triu_indices(30, 1)))
    assert heron.sample_pairs(1, rng=rng).shape == (0, 2)
    assert heron.sample_pairs(0, rng=rng).shape == (0, 2)


def _check_distinct_valid_pairs(pairs: np.ndarray, n_clips: int, n_expected: int) -> None:
    assert pairs.shape == (n_expected, 2) and pairs.dtype == np.int64
    assert np.all(pairs[:, 0] >= 0) and np.all(pairs[:, 1] < n_clips)
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert np.unique(pairs, axis=0).shape[0] == n_expected


def test_sample_pairs_draws_distinct_pairs_above_the_cap() -> None:
    rng = np.random.default_rng(1)
    _check_distinct_valid_pairs(heron.sample_pairs(30, cap=434, rng=rng), 30, 434)
    _check_distinct_valid_pairs(heron.sample_pairs(2_000, cap=50_000, rng=rng), 2_000, 50_000)
    huge = heron.sample_pairs(3_000_000_000 // 2, cap=20_000, rng=rng)
    _check_distinct_valid_pairs(huge, 3_000_000_000 // 2, 20_000)


@pytest.mark.parametrize("n_clips", [2, 3, 10, 94_906_267, 2**31])
def test_linear_index_mapping_round_trips(n_clips: int) -> None:
    total = n_clips * (n_clips - 1) // 2
    linear = np.unique(np.array([0, 1, total // 3, total // 2, total - 2, total - 1], dtype=np.int64))
    linear = linear[(linear >= 0) & (linear < total)]
    pairs = heron._pairs_from_linear_index(linear, n_clips)
    i, j = pairs[:, 0].astype(object), pairs[:, 1].astype(object)
    # Row-major index of (i, j) in exact Python integers.
    recovered = i * n_clips - i * (i + 1) // 2 + (j - i - 1)
    assert recovered.tolist() == linear.tolist()
    assert np.all(pairs[:, 0] < pairs[:, 1])


def test_sample_pairs_is_roughly_uniform() -> None:
    rng = np.random.default_rng(2)
    n_clips, cap, repeats = 20, 60, 400  # 190 pairs, each drawn with probability 60/190
    counts = np.zeros((n_clips, n_clips))
    for _ in range(repeats):
        pairs = heron.sample_pairs(n_clips, cap=cap, rng=rng)
        counts[pairs[:, 0], pairs[:, 1]] += 1
    observed = counts[np.triu_indices(n_clips, 1)]
    expected = repeats * cap / 190
    # Each count is Binomial(400, 0.316): sd ~ 9.3. A chi-square-like check, generous bounds.
    assert abs(observed.mean() - expected) < 1e-9
    assert np.all(np.abs(observed - expected) < 5 * math.sqrt(expected * (1 - cap / 190)))
    chi_square = float(np.sum((observed - expected) ** 2 / (expected * (1 - cap / 190))))
    assert 120 < chi_square < 270  # 189 degrees of freedom


@pytest.mark.parametrize("n_clips", [16, 40, 10_000])
def test_batch_pairs_gives_120_pairs_per_batch_of_16(n_clips: int) -> None:
    rng = np.random.default_rng(3)
    pairs, batch_ids = heron.batch_pairs(n_clips, n_batches=50, rng=rng)
    assert pairs.shape == (50 * 120, 2) and batch_ids.shape == (50 * 120,)
    np.testing.assert_array_equal(np.bincount(batch_ids), np.full(50, 120))
    assert np.all(pairs[:, 0] < pairs[:, 1])
    for batch in range(50):
        in_batch = pairs[batch_ids == batch]
        clips = np.unique(in_batch)
        assert clips.size == 16 and clips.max() < n_clips
        assert np.unique(in_batch, axis=0).shape[0] == 120  # all pairs among the 16 clips


def test_batch_pairs_rejects_a_batch_larger_than_the_pool() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        heron.batch_pairs(10, n_batches=1, rng=np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# label_pairs
# --------------------------------------------------------------------------------------------

SIGNS = np.array([1, 1, -1])
SIGMAS = np.array([0.5, 0.5, 0.5])


def _pool(seed: int = 4, n_clips: int = 60) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_clips, 3)) * [1.0, 2.0, 3.0]


@PROPERTY_SETTINGS
@given(st.integers(0, 2**32 - 1), st.permutations(range(3)))
def test_label_pairs_with_one_ranking_agrees_with_compare(seed: int, order: Sequence[int]) -> None:
    factors = _pool(seed)
    pairs = heron.sample_pairs(60, cap=500, rng=np.random.default_rng(seed))
    ranking = Ranking.from_levels(list(order))
    labels = heron.label_pairs(factors, pairs, rankings=[ranking], signs=SIGNS, sigmas=SIGMAS, keep_ties=True)
    label, level = heron.compare(
        factors[pairs[:, 0]],
        factors[pairs[:, 1]],
        levels=ranking.levels,
        signs=SIGNS,
        margins=heron.margins(factors, SIGMAS),
    )
    np.testing.assert_array_equal(labels.pairs, pairs)
    np.testing.assert_array_equal(labels.target, np.where(label == 0, 0.5, (label + 1) / 2).astype(np.float32))
    np.testing.assert_array_equal(labels.level, level)
    np.testing.assert_array_equal(labels.n_votes, (label != 0).astype(np.int16))


def test_label_pairs_drops_ties_by_default_and_keeps_them_on_request() -> None:
    factors = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [-5.0, 0.0, 0.0]])
    pairs = np.array([[0, 1], [0, 2], [3, 0]])
    ranking = Ranking.from_levels([0, 1, 2])
    dropped = heron.label_pairs(factors, pairs, rankings=[ranking], signs=SIGNS, sigmas=SIGMAS)
    np.testing.assert_array_equal(dropped.pairs, [[0, 2], [3, 0]])
    np.testing.assert_array_equal(dropped.target, [0.0, 0.0])
    kept = heron.label_pairs(factors, pairs, rankings=[ranking], signs=SIGNS, sigmas=SIGMAS, keep_ties=True)
    assert len(kept) == 3
    assert kept.target.tolist() == [0.5, 0.0, 0.0]
    assert kept.level.tolist() == [-1, 0, 0]
    assert kept.n_votes.tolist() == [0, 1, 1]
    assert kept.weight.tolist() == [1.0, 1.0, 1.0]
    assert kept.target.dtype == kept.weight.dtype == np.float32
    assert kept.level.dtype == kept.n_votes.dtype == np.int16


def test_several_rankings_give_soft_targets() -> None:
    # Clip 0 is better on factor 0, clip 1 on factor 1; factor 2 is equal.
    factors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    pairs = np.array([[0, 1], [2, 2]])
    first_factor_0 = Ranking.from_levels([0, 1])
    first_factor_1 = Ranking.from_levels([1, 0])
    only_factor_2 = Ranking.from_levels([2])
    labels = heron.label_pairs(
        factors,
        pairs,
        rankings=[first_factor_0, first_factor_0, first_factor_1, only_factor_2],
        signs=SIGNS,
        sigmas=np.array([0.1, 0.1, 0.1]),
        keep_ties=True,
    )
    # Two of the three deciding rankings prefer clip 0; the factor-2 ranking ties and does not vote.
    assert labels.target[0] == np.float32(2 / 3)
    assert labels.n_votes.tolist() == [3, 0]
    assert labels.level.tolist() == [0, -1]
    # An even split is a real disagreement: 0.5 but kept even without keep_ties.
    split = heron.label_pairs(
        factors,
        pairs,
        rankings=[first_factor_0, first_factor_1],
        signs=SIGNS,
        sigmas=np.array([0.1, 0.1, 0.1]),
    )
    np.testing.assert_array_equal(split.pairs, [[0, 1]])
    assert split.target.tolist() == [0.5] and split.n_votes.tolist() == [2]


def test_level_weighting() -> None:
    # Pairs decided at levels 0, 1, 2 of a 3-level ranking: weights alpha**2, alpha**1, alpha**0.
    factors = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    pairs = np.array([[1, 0], [2, 0], [3, 0], [0, 0]])
    ranking = Ranking.from_levels([0, 1, 2])
    labels = heron.label_pairs(
        factors,
        pairs,
        rankings=[ranking],
        signs=SIGNS,
        sigmas=SIGMAS * 0,
        level_weight_alpha=2.0,
        keep_ties=True,
    )
    assert labels.level.tolist() == [0, 1, 2, -1]
    assert labels.weight.tolist() == [4.0, 2.0, 1.0, 1.0]
    assert labels.target.tolist() == [1.0, 1.0, 1.0, 0.5]
    # Several rankings: the mean weight of the deciding rankings; the level is the most important.
    reversed_ranking = Ranking.from_levels([2, 1, 0])
    both = heron.label_pairs(
        factors,
        pairs[:1],
        rankings=[ranking, reversed_ranking],
        signs=SIGNS,
        sigmas=SIGMAS * 0,
        level_weight_alpha=2.0,
    )
    assert both.weight.tolist() == [2.5] and both.level.tolist() == [0]
    unweighted = heron.label_pairs(factors, pairs, rankings=[ranking], signs=SIGNS, sigmas=SIGMAS)
    assert np.all(unweighted.weight == 1.0)


def test_ranking_sigmas_override_the_project_sigmas() -> None:
    factors = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # std of factor 0 = 1
    pairs = np.array([[1, 0]])
    strict = Ranking.from_levels([0], sigmas=[1.0, 0.5, 0.5])  # margin 1: d == 1 does not decide
    loose = Ranking.from_levels([0])  # project sigma 0.5: decides
    assert len(heron.label_pairs(factors, pairs, rankings=[strict], signs=SIGNS, sigmas=SIGMAS)) == 0
    assert len(heron.label_pairs(factors, pairs, rankings=[loose], signs=SIGNS, sigmas=SIGMAS)) == 1


def test_batch_scope_uses_each_batch_std() -> None:
    rng = np.random.default_rng(5)
    factors = _pool(5, n_clips=40)
    pairs, batch_ids = heron.batch_pairs(40, n_batches=6, rng=rng)
    ranking = Ranking.from_levels([0, (1, 2)])
    labels = heron.label_pairs(
        factors,
        pairs,
        rankings=[ranking],
        signs=SIGNS,
        sigmas=SIGMAS,
        margin_scope="batch",
        batch_ids=batch_ids,
        keep_ties=True,
    )
    np.testing.assert_array_equal(labels.batch_ids, batch_ids)
    for batch in range(6):
        in_batch = batch_ids == batch
        batch_factors = factors[np.unique(pairs[in_batch])]
        std = batch_factors.std(axis=0, ddof=1)
        label, level = heron.compare(
            factors[pairs[in_batch, 0]],
            factors[pairs[in_batch, 1]],
            levels=ranking.levels,
            signs=SIGNS,
            margins=SIGMAS * std,
            scales=std,
            sigmas=SIGMAS,
        )
        np.testing.assert_array_equal(labels.level[in_batch], level)
        np.testing.assert_array_equal(labels.target[in_batch], np.where(label == 0, 0.5, (label + 1) / 2))


def test_label_pairs_handles_a_constant_factor_in_a_tie_group() -> None:
    factors = np.column_stack((np.arange(6.0), np.full(6, 3.0), np.zeros(6)))
    pairs = heron.sample_pairs(6, rng=np.random.default_rng(0))
    labels = heron.label_pairs(
        factors, pairs, rankings=[Ranking.from_levels([(0, 1)])], signs=SIGNS, sigmas=SIGMAS, keep_ties=True
    )
    # Factor 0 has std 1.87; d = (i - j) / 1.87 against mean(0.5, 0.5): every distinct pair decides.
    assert np.all(labels.target == 0.0) and np.all(labels.level == 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rankings": []}, "non-empty"),
        ({"rankings": [[0, 1]]}, "Ranking objects"),
        ({"rankings": [Ranking.from_levels([3])]}, "out of range"),
        ({"pairs": np.array([[0, 9]])}, "outside"),
        ({"pairs": np.array([0, 1])}, "shape"),
        ({"factors": np.array([[np.nan, 0.0, 0.0], [0.0, 0.0, 0.0]])}, "finite"),
        ({"factors": np.zeros((1, 3))}, "at least two clips"),
        ({"margin_scope": "batch"}, "needs batch_ids"),
        ({"margin_scope": "global"}, "margin_scope"),
        ({"level_weight_alpha": 0.0}, "level_weight_alpha"),
        ({"sigmas": np.array([0.5, 0.5])}, "sigmas must have shape"),
        ({"signs": np.array([1, 2, 1])}, "signs must be"),
    ],
)
def test_label_pairs_rejects_bad_input(overrides: dict, message: str) -> None:
    arguments = {
        "factors": np.arange(12.0).reshape(4, 3),
        "pairs": np.array([[0, 1]]),
        "rankings": [Ranking.from_levels([0])],
        "signs": SIGNS,
        "sigmas": SIGMAS,
        "margin_scope": "pool",
        "level_weight_alpha": 1.0,
        **overrides,
    }
    with pytest.raises(ValueError, match=message):
        heron.label_pairs(
            arguments["factors"],
            arguments["pairs"],
            rankings=arguments["rankings"],
            signs=arguments["signs"],
            sigmas=arguments["sigmas"],
            margin_scope=arguments["margin_scope"],
            level_weight_alpha=arguments["level_weight_alpha"],
        )


def test_label_pairs_on_no_pairs() -> None:
    factors = _pool()
    for scope, batch_ids in (("pool", None), ("batch", np.zeros(0, dtype=np.int64))):
        labels = heron.label_pairs(
            factors,
            np.zeros((0, 2), dtype=np.int64),
            rankings=[Ranking.from_levels([0, (1, 2)])],
            signs=SIGNS,
            sigmas=SIGMAS,
            margin_scope=scope,
            batch_ids=batch_ids,
            level_weight_alpha=2.0,
        )
        assert len(labels) == 0 and labels.target.shape == labels.weight.shape == (0,)


def test_tie_group_threshold_from_per_pair_margins_and_scales() -> None:
    # Without sigmas, sigma_k = margin_k / scale_k per pair; a constant factor (scale 0) is left out.
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    b = np.zeros((2, 2))
    scales = np.array([[1.0, 1.0], [1.0, 0.0]])
    margins = np.array([[0.5, 1.5], [0.5, 0.0]])  # thresholds: mean(0.5, 1.5) = 1 and 0.5
    label, _ = heron.compare(a, b, levels=[(0, 1)], signs=np.array([1, 1]), margins=margins, scales=scales)
    assert label.tolist() == [0, 1]
