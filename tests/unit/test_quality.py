"""Quality control statistics against published reference values and small hand-worked cases (no database)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from labeling.quality import (
    CANT_TELL,
    AnnotatorScore,
    Answer,
    RepeatOf,
    agreement_with_others,
    annotator_report,
    fleiss_kappa,
    gold_accuracy,
    kendall_w,
    krippendorff_alpha,
    ranking_concordance,
    self_consistency,
)


def _answers_from_matrix(rows: Sequence[Sequence[object]]) -> list[Answer]:
    """Reliability data (coders x units, None = missing) as answers: coder i is "c<i>", unit j is query j."""
    return [
        Answer(query_id=unit, annotator=f"c{coder}", label=str(value))
        for coder, row in enumerate(rows)
        for unit, value in enumerate(row)
        if value is not None
    ]


def _answers_from_counts(table: Sequence[Sequence[int]]) -> list[Answer]:
    """A (subjects x categories) count table as answers, with fresh rater names within each subject."""
    answers = []
    for subject, counts in enumerate(table):
        rater = 0
        for category, count in enumerate(counts):
            for _ in range(count):
                answers.append(Answer(query_id=subject, annotator=f"r{rater}", label=f"k{category}"))
                rater += 1
    return answers


def _levels_from_ranks(ranks: Sequence[float], keys: Sequence[str]) -> list[list[str]]:
    """Rank vector (1 = first, equal ranks tied) -> ranking as levels of keys."""
    levels: dict[float, list[str]] = {}
    for key, rank in zip(keys, ranks, strict=True):
        levels.setdefault(rank, []).append(key)
    return [levels[rank] for rank in sorted(levels)]


# --- Krippendorff's alpha ---------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, nominal alpha 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_matches_published_example() -> None:
    assert krippendorff_alpha(_answers_from_matrix(KRIPPENDORFF_2011)) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_treats_cant_tell_as_missing() -> None:
    answers = _answers_from_matrix(KRIPPENDORFF_2011)
    extra = [Answer(query_id=u, annotator="c0", label=CANT_TELL) for u in (9, 10, 11)]
    extra += [Answer(query_id=20, annotator=f"c{c}", label=CANT_TELL) for c in range(4)]
    assert krippendorff_alpha(answers + extra) == pytest.approx(krippendorff_alpha(answers))


def test_krippendorff_alpha_perfect_and_undefined() -> None:
    perfect = _answers_from_matrix([["a", "b", "equal", "a"], ["a", "b", "equal", None]])
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([]))
    assert math.isnan(krippendorff_alpha(_answers_from_matrix([["a", "b", "a"]])))  # one annotator
    assert math.isnan(krippendorff_alpha(_answers_from_matrix([["a", None], [None, "b"]])))  # nothing pairable
    assert math.isnan(krippendorff_alpha(_answers_from_matrix([["a", "a"], ["a", "a"]])))  # one category


def test_duplicate_answer_is_rejected() -> None:
    answers = [Answer(1, "ann", "a"), Answer(1, "ann", "b"), Answer(1, "bob", "a")]
    with pytest.raises(ValueError, match="more than once"):
        krippendorff_alpha(answers)


# --- Fleiss' kappa ----------------------------------------------------------------------------------

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_wikipedia_example() -> None:
    assert fleiss_kappa(_answers_from_counts(FLEISS_WIKIPEDIA)) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_uses_only_queries_with_the_modal_rater_count() -> None:
    answers = _answers_from_counts(FLEISS_WIKIPEDIA)
    # Two odd-sized queries (3 and 2 answers) and cant_tell answers must not change the result.
    answers += [Answer(100, "x", "k0"), Answer(100, "y", "k4"), Answer(100, "z", "k2")]
    answers += [Answer(101, "x", "k1"), Answer(101, "y", "k1"), Answer(101, "z", CANT_TELL)]
    answers += [Answer(0, "extra", CANT_TELL)]
    assert fleiss_kappa(answers) == pytest.approx(0.20993070, abs=1e-6)


def test_fleiss_kappa_tie_between_counts_goes_to_larger() -> None:
    # One query with 2 answers (disagree), one with 3 (agree): tie in counts -> the 3-rater query only.
    answers = [Answer(1, "p", "a"), Answer(1, "q", "b")]
    answers += [Answer(2, "p", "a"), Answer(2, "q", "a"), Answer(2, "r", "b")]
    answers += [Answer(3, "p", "b"), Answer(3, "q", "b"), Answer(3, "r", "b")]
    answers += [Answer(4, "p", "a"), Answer(4, "q", "equal")]
    only_three = [a for a in answers if a.query_id in (2, 3)]
    assert fleiss_kappa(answers) == pytest.approx(fleiss_kappa(only_three))


def test_fleiss_kappa_undefined_cases() -> None:
    assert math.isnan(fleiss_kappa([]))
    assert math.isnan(fleiss_kappa([Answer(1, "p", "a"), Answer(2, "q", "b")]))
    same = [Answer(q, r, "a") for q in (1, 2) for r in ("p", "q", "s")]
    assert math.isnan(fleiss_kappa(same))


def test_alpha_and_kappa_agree_in_sign_on_pairwise_labels() -> None:
    good = _answers_from_matrix([["a", "b", "equal", "a", "b"], ["a", "b", "equal", "a", "a"]])
    bad = _answers_from_matrix([["a", "b", "a", "b"], ["b", "a", "b", "a"]])
    assert krippendorff_alpha(good) > 0.5 and fleiss_kappa(good) > 0.5
    assert krippendorff_alpha(bad) < 0 and fleiss_kappa(bad) < 0


# --- gold accuracy ----------------------------------------------------------------------------------


def test_gold_accuracy_counts_and_wilson_interval() -> None:
    gold = {1: "a", 2: "b", 3: "equal", 4: "a"}
    answers = [
        Answer(1, "ann", "a"),
        Answer(2, "ann", "b"),
        Answer(3, "ann", "a"),
        Answer(4, "ann", CANT_TELL),  # not counted at all
        Answer(5, "ann", "b"),  # not gold
        Answer(1, "bob", "b"),
        Answer(5, "cat", "a"),  # answered, but no gold
    ]
    scores = gold_accuracy(answers, gold)
    assert set(scores) == {"ann", "bob", "cat"}
    ann = scores["ann"]
    assert (ann.n, ann.hits, ann.value) == (3, 2, pytest.approx(2 / 3))
    low, high = proportion_confint(2, 3, alpha=0.05, method="wilson")
    assert (ann.low, ann.high) == (pytest.approx(low), pytest.approx(high))
    assert ann.low < ann.value < ann.high
    assert (scores["bob"].n, scores["bob"].hits, scores["bob"].value) == (1, 0, 0.0)
    cat = scores["cat"]
    assert cat.n == 0 and math.isnan(cat.value) and math.isnan(cat.low) and math.isnan(cat.high)


def test_wilson_known_value() -> None:
    # Wilson (1927) interval for 8/10 at 95%: 0.4902 .. 0.9433 (Newcombe 1998, method 3).
    score = AnnotatorScore.of(8, 10)
    assert score.low == pytest.approx(0.4902, abs=1e-4)
    assert score.high == pytest.approx(0.9433, abs=1e-4)
    with pytest.raises(ValueError):
        AnnotatorScore.of(3, 2)


# --- self-consistency -------------------------------------------------------------------------------


def test_self_consistency_counting() -> None:
    repeats = {11: 1, 12: 2, 13: RepeatOf(original=3, same_order=False), 14: 4}
    answers = [
        # ann: 11 same, 12 differs, 13 reversed pair (a <-> b) consistent, 14 repeat is cant_tell -> skipped
        Answer(1, "ann", "a"),
        Answer(11, "ann", "a"),
        Answer(2, "ann", "equal"),
        Answer(12, "ann", "b"),
        Answer(3, "ann", "a"),
        Answer(13, "ann", "b"),
        Answer(4, "ann", "a"),
        Answer(14, "ann", CANT_TELL),
        # bob: reversed pair answered "a" both times -> inconsistent; "equal" on a reversed repeat stays equal
        Answer(3, "bob", "a"),
        Answer(13, "bob", "a"),
        Answer(2, "bob", "equal"),
        Answer(12, "bob", "equal"),
        # cat: only originals
        Answer(1, "cat", "a"),
    ]
    scores = self_consistency(answers, repeats)
    assert (scores["ann"].n, scores["ann"].hits) == (3, 2)
    assert scores["ann"].value == pytest.approx(2 / 3)
    assert (scores["bob"].n, scores["bob"].hits) == (2, 1)
    assert scores["cat"].n == 0 and math.isnan(scores["cat"].value)


def test_self_consistency_reversed_equal_stays_equal() -> None:
    answers = [Answer(1, "ann", "equal"), Answer(2, "ann", "equal")]
    assert self_consistency(answers, {2: RepeatOf(1, same_order=False)})["ann"].hits == 1


# --- agreement with others --------------------------------------------------------------------------


def test_agreement_with_others_hand_case() -> None:
    answers = [
        # query 1: ann a, bob a, cat b
        Answer(1, "ann", "a"),
        Answer(1, "bob", "a"),
        Answer(1, "cat", "b"),
        # query 2: ann equal, bob equal; cat can't tell (excluded)
        Answer(2, "ann", "equal"),
        Answer(2, "bob", "equal"),
        Answer(2, "cat", CANT_TELL),
        # query 3: only ann -> no pairs
        Answer(3, "ann", "b"),
        # query 4: only dan -> dan has no pairs
        Answer(4, "dan", "a"),
    ]
    scores = agreement_with_others(answers)
    # ann: (1: bob yes, cat no) + (2: bob yes) = 2/3; bob likewise; cat: (1: ann no, bob no) = 0/2.
    assert (scores["ann"].n, scores["ann"].hits) == (3, 2)
    assert (scores["bob"].n, scores["bob"].hits) == (3, 2)
    assert (scores["cat"].n, scores["cat"].hits) == (2, 0)
    assert scores["dan"].n == 0 and math.isnan(scores["dan"].value)


def test_annotator_report_combines_scores() -> None:
    answers = [
        Answer(1, "ann", "a"),
        Answer(1, "bob", "a"),
        Answer(2, "ann", "a"),
        Answer(2, "bob", CANT_TELL),
        Answer(3, "ann", "a"),
    ]
    rows = annotator_report(answers, gold={1: "a"}, repeats={3: 2})
    assert [row.annotator for row in rows] == ["ann", "bob"]
    ann, bob = rows
    assert (ann.answered, ann.cant_tell) == (3, 0)
    assert (bob.answered, bob.cant_tell) == (1, 1)
    assert (ann.gold.n, ann.gold.hits) == (1, 1)
    assert (ann.self_consistency.n, ann.self_consistency.hits) == (1, 1)
    assert bob.self_consistency.n == 0
    assert (ann.agreement.n, ann.agreement.hits) == (1, 1)
    assert annotator_report([]) == []
    assert math.isnan(annotator_report(answers)[0].gold.value)


# --- factor rankings: Kendall's tau and W -----------------------------------------------------------

FACTORS = ["speed", "energy", "upright", "smooth"]


def test_tau_identical_and_reversed_rankings() -> None:
    forward = [["speed"], ["energy"], ["upright"], ["smooth"]]
    backward = list(reversed(forward))
    result = ranking_concordance([forward, forward, backward], FACTORS)
    assert result.tau.shape == (3, 3)
    assert np.allclose(np.diag(result.tau), 1.0)
    assert result.tau[0, 1] == pytest.approx(1.0)
    assert result.tau[0, 2] == pytest.approx(-1.0)
    assert np.allclose(result.tau, result.tau.T)
    tau, w = result  # unpacks like a tuple
    assert tau is result.tau
    assert w == result.w


def test_tau_with_ties_is_tau_b() -> None:
    first = [["speed", "energy"], ["upright"], ["smooth"]]
    second = [["speed"], ["energy"], ["upright", "smooth"]]
    expected = stats.kendalltau([1.5, 1.5, 3, 4], [1, 2, 3.5, 3.5], variant="b").statistic
    assert ranking_concordance([first, second], FACTORS).tau[0, 1] == pytest.approx(expected)


def test_unranked_factors_are_tied_last() -> None:
    partial = [["speed"], ["energy"]]
    explicit = [["speed"], ["energy"], ["upright", "smooth"]]
    result = ranking_concordance([partial, explicit], FACTORS)
    assert result.tau[0, 1] == pytest.approx(1.0)
    assert result.w == pytest.approx(1.0)


def test_all_tied_ranking_gives_nan_tau() -> None:
    flat = [FACTORS]
    ordered = [[key] for key in FACTORS]
    result = ranking_concordance([flat, ordered], FACTORS)
    assert math.isnan(result.tau[0, 0]) and math.isnan(result.tau[0, 1])
    assert result.tau[1, 1] == 1.0
    assert math.isnan(ranking_concordance([flat, flat], FACTORS).w)


def test_mean_tau_over_defined_pairs() -> None:
    ordered = [[key] for key in FACTORS]
    swapped = [["energy"], ["speed"], ["upright"], ["smooth"]]
    # One adjacent swap among 4 factors: (5 concordant - 1 discordant) / 6 = 2/3; tau's mean over the
    # three off-diagonal pairs (1, 2/3, 2/3).
    result = ranking_concordance([ordered, ordered, swapped], FACTORS)
    assert result.tau[0, 2] == pytest.approx(2 / 3)
    assert result.mean_tau == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # Ranks (1,2,3,4), (2,1,3,4), (1,2,4,3): rank sums (4,5,10,11), mean 7.5, S = 37, W = 37/45.
    third = [["speed"], ["energy"], ["smooth"], ["upright"]]
    assert ranking_concordance([ordered, swapped, third], FACTORS).w == pytest.approx(37 / 45)
    # Ranks (1, 2, 3) and (1, 2.5, 2.5): tau-b = 2 / sqrt(6); W = 78 / 84.
    ties = ranking_concordance([[["speed"], ["energy"], ["upright"]], [["speed"], ["energy", "upright"]]], FACTORS[:3])
    assert ties.tau[0, 1] == pytest.approx(2 / math.sqrt(6))
    assert ties.w == pytest.approx(78 / 84)
    # Undefined: one ranking, or every pair involves a ranking that ties everything.
    assert math.isnan(ranking_concordance([ordered], FACTORS).mean_tau)
    assert math.isnan(ranking_concordance([[FACTORS], ordered], FACTORS).mean_tau)


def test_ranking_validation() -> None:
    with pytest.raises(ValueError, match="unknown factor"):
        ranking_concordance([[["nope"]]], FACTORS)
    with pytest.raises(ValueError, match="more than once"):
        ranking_concordance([[["speed"], ["speed"]]], FACTORS)
    with pytest.raises(ValueError, match="non-empty"):
        ranking_concordance([[["speed"], []]], FACTORS)


# influentialpoints.com, "Kendall's coefficient of concordance", worked example I: 4 raters rank the
# strawberries of 8 farms (no ties); rank sums 31 12 12 15 22 5 22 25, S = 500, W = 500 / 672 = 0.744.
STRAWBERRIES = np.array(
    [
        [8, 4, 2, 3, 5, 1, 6, 7],
        [7, 3, 1, 4, 5, 2, 6, 8],
        [8, 2, 5, 6, 7, 1, 4, 3],
        [8, 3, 4, 2, 5, 1, 6, 7],
    ],
    dtype=float,
)
FARMS = [f"farm{i}" for i in range(1, 9)]


def test_kendall_w_textbook_example_without_ties() -> None:
    assert kendall_w(STRAWBERRIES) == pytest.approx(500 / 672)
    rankings = [_levels_from_ranks(row, FARMS) for row in STRAWBERRIES]
    assert ranking_concordance(rankings, FARMS).w == pytest.approx(0.744, abs=5e-4)


def test_kendall_w_hand_example_with_ties() -> None:
    # 3 raters, 4 items; raters 2 and 3 each tie one pair (T = 2^3 - 2 = 6 each).
    # Rank sums 3.5 5.5 9.5 11.5, mean 7.5, S = 16 + 4 + 4 + 16 = 40.
    # W = 12 * 40 / (3^2 * (4^3 - 4) - 3 * 12) = 480 / 504 = 20/21 (uncorrected: 480/540).
    ranks = np.array([[1, 2, 3, 4], [1.5, 1.5, 3, 4], [1, 2, 3.5, 3.5]])
    assert kendall_w(ranks) == pytest.approx(20 / 21)
    rankings = [_levels_from_ranks(row, FACTORS) for row in ranks]
    assert ranking_concordance(rankings, FACTORS).w == pytest.approx(20 / 21)
    # The same without ties: rank sums 4 6 8 12, S = 35, W = 420 / 540 = 7/9.
    assert kendall_w(np.array([[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4]])) == pytest.approx(7 / 9)


@pytest.mark.parametrize(
    "ranks",
    [
        STRAWBERRIES,
        np.array([[1, 2, 3, 4], [1.5, 1.5, 3, 4], [1, 2, 3.5, 3.5]]),
        np.array([[1, 3, 3, 3, 5], [2.5, 2.5, 2.5, 2.5, 5], [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]),
    ],
)
def test_kendall_w_equals_tie_corrected_friedman(ranks: np.ndarray) -> None:
    m, n = ranks.shape
    chi_square = stats.friedmanchisquare(*ranks.T).statistic
    assert kendall_w(ranks) == pytest.approx(chi_square / (m * (n - 1)))


def test_kendall_w_undefined() -> None:
    assert math.isnan(kendall_w(np.array([[1.0, 2.0, 3.0]])))  # one rater
    assert math.isnan(kendall_w(np.array([[1.0], [1.0]])))  # one item
    with pytest.raises(ValueError):
        kendall_w(np.array([1.0, 2.0]))
    single = ranking_concordance([[["speed"], ["energy"]]], FACTORS)
    assert math.isnan(single.w) and single.tau.shape == (1, 1)
