"""Annotation quality control: per-annotator scores and inter-annotator agreement (no Django).

Everything here is a pure function over plain data so it can be tested with small hand-made
examples and reused by views, exports and management commands alike. The callers turn
``Judgment`` rows into :class:`Answer` objects in *canonical* terms (``"a"``: clip_a better,
``"b"``: clip_b better, ``"equal"``, ``"cant_tell"``), i.e. after undoing the on-screen swap, so
that two annotators who saw the same pair in different left/right order are compared correctly.

``"cant_tell"`` is treated as a missing answer everywhere: it says the annotator could not judge,
not that they judged the clips to be equal, and counting it as a category would inflate agreement
between annotators who skip the same hard queries.

The coefficients are delegated to maintained libraries wherever one computes them:
Krippendorff's alpha to ``krippendorff``, Fleiss' kappa and Wilson intervals to ``statsmodels``,
Kendall's tau-b to ``scipy``. Kendall's W is in none of them, so it is written out here (a few
lines, tested against a textbook example and against scipy's tie-corrected Friedman statistic).
Undefined values are NaN rather than exceptions, so a dashboard can show "n/a" for a project that
has too little data yet.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import krippendorff
import numpy as np
import numpy.typing as npt
from scipy import stats
from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "CANT_TELL",
    "CONFIDENCE",
    "LABELS",
    "AnnotatorReportRow",
    "AnnotatorScore",
    "Answer",
    "RankingConcordance",
    "RepeatOf",
    "agreement_with_others",
    "annotator_report",
    "annotator_report_from_counts",
    "fleiss_kappa",
    "fleiss_kappa_from_counts",
    "gold_accuracy",
    "kendall_w",
    "krippendorff_alpha",
    "krippendorff_alpha_from_counts",
    "ranking_concordance",
    "self_consistency",
]

#: The canonical answer categories of a pairwise judgment (clip_a better, clip_b better, equal).
LABELS: tuple[str, ...] = ("a", "b", "equal")
#: The "can't tell" answer: excluded (treated as missing) by every function in this module.
CANT_TELL = "cant_tell"
#: Coverage of the Wilson intervals reported in :class:`AnnotatorScore`.
CONFIDENCE = 0.95

_SWAP = {"a": "b", "b": "a"}

FloatMatrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Answer:
    """One annotator's answer to one query, in canonical terms.

    ``label`` is a nominal category; the platform uses :data:`LABELS` plus :data:`CANT_TELL`, but
    any string works (the agreement coefficients are nominal), which lets the tests use the
    published reference data sets unchanged.
    """

    query_id: int
    annotator: str
    label: str


@dataclass(frozen=True, slots=True)
class RepeatOf:
    """Which query a repeat query repeats, and whether it shows the pair in the same a/b order.

    Labels are canonical, so a consistent annotator gives the *same* label on a same-order repeat;
    on a repeat whose clip_a is the original's clip_b (``same_order=False``) "a" and "b" trade
    places ("equal" stays "equal").
    """

    original: int
    same_order: bool = True


@dataclass(frozen=True, slots=True)
class AnnotatorScore:
    """A proportion ``hits / n`` with its Wilson interval; all three are NaN when ``n == 0``.

    Wilson rather than the normal approximation because annotators often have only a handful of
    gold or repeat queries, where the Wald interval is far too narrow and can leave [0, 1].
    """

    n: int
    hits: int
    value: float
    low: float
    high: float

    @classmethod
    def of(cls, hits: int, n: int) -> AnnotatorScore:
        """Score ``hits`` successes out of ``n`` trials (Wilson interval at :data:`CONFIDENCE`)."""
        if n < 0 or not 0 <= hits <= n:
            raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
        if n == 0:
            return cls(n=0, hits=0, value=math.nan, low=math.nan, high=math.nan)
        low, high = proportion_confint(hits, n, alpha=1 - CONFIDENCE, method="wilson")
        return cls(n=n, hits=hits, value=hits / n, low=float(low), high=float(high))


@dataclass(frozen=True, slots=True)
class AnnotatorReportRow:
    """One dashboard row: an annotator's answer counts and their three quality scores."""

    annotator: str
    answered: int
    cant_tell: int
    gold: AnnotatorScore
    self_consistency: AnnotatorScore
    agreement: AnnotatorScore


class RankingConcordance(NamedTuple):
    """Kendall's tau-b between every two rankings (symmetric matrix) and Kendall's W over all."""

    tau: FloatMatrix
    w: float

    @property
    def mean_tau(self) -> float:
        """The mean of the defined off-diagonal tau values; NaN with fewer than two rankings or none defined."""
        off_diagonal = self.tau[~np.eye(len(self.tau), dtype=bool)]
        finite = off_diagonal[np.isfinite(off_diagonal)]
        return float(finite.mean()) if finite.size else math.nan


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _by_query(answers: Iterable[Answer]) -> dict[int, dict[str, str]]:
    """``query_id -> {annotator: label}`` without "can't tell" answers.

    A (query, annotator) pair may appear only once (the database enforces one judgment per
    annotator and query); a duplicate means the caller mixed data sets, so it is an error rather
    than something to resolve silently.
    """
    table: dict[int, dict[str, str]] = defaultdict(dict)
    seen: set[tuple[int, str]] = set()
    for answer in answers:
        key = (answer.query_id, answer.annotator)
        if key in seen:
            raise ValueError(f"annotator {answer.annotator!r} answered query {answer.query_id} more than once")
        seen.add(key)
        if answer.label != CANT_TELL:
            table[answer.query_id][answer.annotator] = answer.label
    return dict(table)


def _by_annotator(answers: Iterable[Answer]) -> dict[str, dict[int, str]]:
    """``annotator -> {query_id: label}`` without "can't tell" answers (duplicates rejected)."""
    table: dict[str, dict[int, str]] = defaultdict(dict)
    for query_id, labels in _by_query(answers).items():
        for annotator, label in labels.items():
            table[annotator][query_id] = label
    return dict(table)


def _pairable(answers: Iterable[Answer]) -> dict[int, dict[str, str]]:
    """Only the queries with at least two (non-"can't tell") answers: the rest carry no agreement."""
    return {query: labels for query, labels in _by_query(answers).items() if len(labels) >= 2}


# --------------------------------------------------------------------------------------------
# Agreement coefficients over all annotators
# --------------------------------------------------------------------------------------------


def krippendorff_alpha(answers: Iterable[Answer]) -> float:
    """Krippendorff's alpha (nominal) over all answers; NaN when it is undefined.

    Alpha is the coefficient of choice for crowd labels because it copes with missing data: every
    annotator answers only some queries. The (annotators x queries) reliability matrix holds a
    category index per cell and NaN where the annotator did not answer (or said "can't tell").
    Queries with fewer than two answers are left out up front; alpha ignores them anyway.

    NaN when there are fewer than two annotators, no query with two or more answers, or only one
    category in use (no variation: alpha is 0/0 and the library raises).
    """
    queries = _pairable(answers)
    annotators = sorted({annotator for labels in queries.values() for annotator in labels})
    categories = sorted({label for labels in queries.values() for label in labels.values()})
    if len(annotators) < 2 or not queries or len(categories) < 2:
        return math.nan
    row = {annotator: i for i, annotator in enumerate(annotators)}
    code = {label: float(i) for i, label in enumerate(categories)}
    data = np.full((len(annotators), len(queries)), np.nan)
    for column, labels in enumerate(queries.values()):
        for annotator, label in labels.items():
            data[row[annotator], column] = code[label]
    value = krippendorff.alpha(
        reliability_data=data,
        value_domain=list(code.values()),
        level_of_measurement="nominal",
    )
    return float(value)


def fleiss_kappa(answers: Iterable[Answer]) -> float:
    """Fleiss' kappa over the queries that share the most common number of answers; NaN if undefined.

    Fleiss' kappa assumes every item was rated by the same number of raters (who need not be the
    same people). Real assignments are ragged, so only the queries whose number of
    (non-"can't tell") answers equals the most common count among queries with at least two
    answers are used; a tie between counts goes to the larger count, since more raters per item
    estimate agreement better. Alpha (:func:`krippendorff_alpha`) uses all the data; report kappa
    alongside it for readers who expect kappa.

    The (queries x categories) count table is passed to ``statsmodels``. NaN when no query has
    two answers or when chance agreement is 1 (every answer in one category: 0/0).
    """
    queries = _pairable(answers)
    if not queries:
        return math.nan
    counts = Counter(len(labels) for labels in queries.values())
    raters = max(counts, key=lambda size: (counts[size], size))
    used = [labels for labels in queries.values() if len(labels) == raters]
    categories = sorted({label for labels in used for label in labels.values()})
    column = {label: i for i, label in enumerate(categories)}
    table = np.zeros((len(used), len(categories)), dtype=np.int64)
    for row, labels in enumerate(used):
        for label in labels.values():
            table[row, column[label]] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 when all answers share one category
        value = float(_statsmodels_fleiss_kappa(table, method="fleiss"))
    return value if math.isfinite(value) else math.nan


# --------------------------------------------------------------------------------------------
# Per-annotator scores
# --------------------------------------------------------------------------------------------


def gold_accuracy(answers: Iterable[Answer], gold: Mapping[int, str]) -> dict[str, AnnotatorScore]:
    """Per annotator, the share of their answered gold queries that match the expected label.

    Only annotators with at least one answer (of any kind) appear; those who answered no gold
    query, or only said "can't tell" on gold, get ``n == 0`` and NaN. "Can't tell" on a gold
    query is not counted as wrong: gold queries are meant to be clear, and a skip is already
    visible in the "can't tell" count of :func:`annotator_report`.
    """
    answers = list(answers)
    per_annotator = _by_annotator(answers)
    scores: dict[str, AnnotatorScore] = {}
    for annotator in sorted({answer.annotator for answer in answers}):
        labels = per_annotator.get(annotator, {})
        graded = [query for query in labels if query in gold]
        hits = sum(labels[query] == gold[query] for query in graded)
        scores[annotator] = AnnotatorScore.of(hits, len(graded))
    return scores


def self_consistency(answers: Iterable[Answer], repeats: Mapping[int, int | RepeatOf]) -> dict[str, AnnotatorScore]:
    """Per annotator, the share of repeat pairs on which they gave the same canonical answer twice.

    ``repeats`` maps a repeat query id to the query it repeats (an ``int`` means the same a/b
    order; use :class:`RepeatOf` with ``same_order=False`` when the repeat shows the pair with a
    and b exchanged). A pair counts only when the annotator answered both queries with something
    other than "can't tell". Annotators without any counted pair get ``n == 0`` and NaN.
    """
    answers = list(answers)
    per_annotator = _by_annotator(answers)
    scores: dict[str, AnnotatorScore] = {}
    for annotator in sorted({answer.annotator for answer in answers}):
        labels = per_annotator.get(annotator, {})
        n = hits = 0
        for repeat_id, target in repeats.items():
            repeat_of = target if isinstance(target, RepeatOf) else RepeatOf(original=target)
            if repeat_id not in labels or repeat_of.original not in labels:
                continue
            again = labels[repeat_id]
            if not repeat_of.same_order:
                again = _SWAP.get(again, again)
            n += 1
            hits += again == labels[repeat_of.original]
        scores[annotator] = AnnotatorScore.of(hits, n)
    return scores


def agreement_with_others(answers: Iterable[Answer]) -> dict[str, AnnotatorScore]:
    """Per annotator, pairwise percent agreement with everyone else who answered the same queries.

    Over every query the annotator answered together with at least one other annotator, each
    (their answer, other's answer) pair counts once: ``hits`` are the matching pairs, ``n`` all
    pairs. No chance correction: it is a per-person screening number, compared across annotators
    of one project (alpha and kappa give the chance-corrected picture for the whole project).

    The Wilson interval treats the pairs as independent, which they are not when several others
    answered the same query, so it is somewhat too narrow; read it as a rough guide.
    """
    answers = list(answers)
    n_pairs: Counter[str] = Counter()
    n_hits: Counter[str] = Counter()
    for labels in _by_query(answers).values():
        for annotator, label in labels.items():
            for other, other_label in labels.items():
                if other != annotator:
                    n_pairs[annotator] += 1
                    n_hits[annotator] += label == other_label
    return {
        annotator: AnnotatorScore.of(n_hits[annotator], n_pairs[annotator])
        for annotator in sorted({answer.annotator for answer in answers})
    }


def annotator_report(
    answers: Iterable[Answer],
    gold: Mapping[int, str] | None = None,
    repeats: Mapping[int, int | RepeatOf] | None = None,
) -> list[AnnotatorReportRow]:
    """One row per annotator (sorted by name): counts, gold accuracy, self-consistency, agreement.

    ``answered`` counts answers other than "can't tell", ``cant_tell`` the rest; a high share of
    "can't tell" is a quality signal in itself that the three scores cannot show. Missing
    ``gold``/``repeats`` give ``n == 0`` scores.
    """
    answers = list(answers)
    gold_scores = gold_accuracy(answers, gold or {})
    consistency = self_consistency(answers, repeats or {})
    agreement = agreement_with_others(answers)
    answered: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for answer in answers:
        (skipped if answer.label == CANT_TELL else answered)[answer.annotator] += 1
    return [
        AnnotatorReportRow(
            annotator=annotator,
            answered=answered[annotator],
            cant_tell=skipped[annotator],
            gold=gold_scores[annotator],
            self_consistency=consistency[annotator],
            agreement=agreement[annotator],
        )
        for annotator in sorted(gold_scores)
    ]


# --------------------------------------------------------------------------------------------
# The same statistics from counts (what SQL GROUP BY gives), for projects with millions of answers
# --------------------------------------------------------------------------------------------
#
# The functions above take one Answer per judgment; at a million judgments building those objects is most of the
# dashboard's time and memory. Every statistic here depends only on counts, so the database can group the answers
# and send a few hundred rows: a query's answers as a count per label ("label counts", over LABELS, "can't tell"
# left out), and how many queries share each count vector ("weights"). The results equal the Answer-based
# functions' (tests/test_quality_counts.py checks it on random data).


def _weighted_counts(counts: npt.ArrayLike, weights: npt.ArrayLike | None) -> tuple[FloatMatrix, FloatMatrix]:
    table = np.asarray(counts, dtype=np.float64).reshape(-1, len(LABELS))
    w = np.ones(len(table)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(table),) or (table < 0).any() or (w < 0).any():
        raise ValueError("need one non-negative weight per row of non-negative label counts")
    return table, w


def krippendorff_alpha_from_counts(counts: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> float:
    """Krippendorff's alpha (nominal) from per-query label counts; equals :func:`krippendorff_alpha`.

    ``counts`` is (queries x labels), a row the number of answers of each label a query got; ``weights`` (default
    1) says how many queries share that row. With the coincidence matrix ``o`` (o_ck = sum over queries of
    n_c (n_k - [c = k]) / (m - 1), m the query's answers) and its marginals ``n_c`` (total ``n``):
    alpha = 1 - (n - 1) (n - sum_c o_cc) / (n^2 - sum_c n_c^2). Queries with fewer than two answers carry no
    pairs and are left out; NaN when no query has two answers or only one label is used (as the library).
    """
    table, w = _weighted_counts(counts, weights)
    m = table.sum(axis=1)
    keep = (m >= 2) & (w > 0)
    table, w, m = table[keep], w[keep], m[keep]
    if not len(table):
        return math.nan
    per_pair = w / (m - 1)
    diagonal = float(np.sum(per_pair[:, None] * table * (table - 1)))
    marginals = (w[:, None] * table).sum(axis=0)  # each answer pairs with m - 1 others: n_c = sum w n_c
    if np.count_nonzero(marginals) < 2:
        return math.nan
    n = float(marginals.sum())
    return 1 - (n - 1) * (n - diagonal) / (n * n - float(np.sum(marginals**2)))


def fleiss_kappa_from_counts(counts: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> float:
    """Fleiss' kappa from per-query label counts (rows, each shared by ``weights`` queries); equals
    :func:`fleiss_kappa`: only queries with the most common number of answers (of those with two or more; a tie
    goes to the larger number) are used, and it is NaN when none has two answers or chance agreement is 1."""
    table, w = _weighted_counts(counts, weights)
    m = table.sum(axis=1)
    keep = (m >= 2) & (w > 0)
    table, w, m = table[keep], w[keep], m[keep]
    if not len(table):
        return math.nan
    sizes: Counter[int] = Counter()
    for size, weight in zip(m.astype(int).tolist(), w.tolist(), strict=True):
        sizes[size] += round(weight)
    raters = max(sizes, key=lambda size: (sizes[size], size))
    used = m == raters
    table, w = table[used], w[used]
    total = float(w.sum())
    p_category = (w[:, None] * table).sum(axis=0) / (total * raters)
    p_query = ((table**2).sum(axis=1) - raters) / (raters * (raters - 1))
    p_mean = float(np.sum(w * p_query) / total)
    p_chance = float(np.sum(p_category**2))
    if p_chance >= 1:
        return math.nan
    value = (p_mean - p_chance) / (1 - p_chance)
    return value if math.isfinite(value) else math.nan


def annotator_report_from_counts(
    *,
    answers: Mapping[str, tuple[int, int]],
    gold: Iterable[tuple[str, str, str, int]] = (),
    repeats: Iterable[tuple[str, str, str, bool, int]] = (),
    agreement: Iterable[tuple[str, str, Sequence[int], int]] = (),
) -> list[AnnotatorReportRow]:
    """:func:`annotator_report` from grouped counts; the same rows.

    - ``answers``: annotator -> (answers other than "can't tell", "can't tell" answers); every annotator gets a row.
    - ``gold``: (annotator, their label, the expected label, how many such answers) over answers to gold queries.
    - ``repeats``: (annotator, label on the original, label on the repeat, same a/b order, how many such pairs)
      over the pairs where they answered both.
    - ``agreement``: (annotator, their label on a query, that query's label counts over LABELS including their own
      answer, how many such answers): each answer agrees with ``counts[label] - 1`` of ``sum(counts) - 1`` others.

    "Can't tell" labels in ``gold``, ``repeats`` and ``agreement`` are ignored, as in the Answer-based functions.
    """
    hits: dict[str, Counter[str]] = {"gold": Counter(), "repeat": Counter(), "agreement": Counter()}
    trials: dict[str, Counter[str]] = {"gold": Counter(), "repeat": Counter(), "agreement": Counter()}
    for annotator, label, expected, n in gold:
        if label != CANT_TELL:
            trials["gold"][annotator] += n
            hits["gold"][annotator] += n * (label == expected)
    for annotator, first, again, same_order, n in repeats:
        if CANT_TELL in (first, again):
            continue
        if not same_order:
            again = _SWAP.get(again, again)
        trials["repeat"][annotator] += n
        hits["repeat"][annotator] += n * (again == first)
    index = {label: i for i, label in enumerate(LABELS)}
    for annotator, label, label_counts, n in agreement:
        if label == CANT_TELL:
            continue
        trials["agreement"][annotator] += n * (sum(label_counts) - 1)
        hits["agreement"][annotator] += n * (label_counts[index[label]] - 1)

    def score(kind: str, annotator: str) -> AnnotatorScore:
        return AnnotatorScore.of(hits[kind][annotator], trials[kind][annotator])

    return [
        AnnotatorReportRow(
            annotator=annotator,
            answered=answered,
            cant_tell=cant_tell,
            gold=score("gold", annotator),
            self_consistency=score("repeat", annotator),
            agreement=score("agreement", annotator),
        )
        for annotator, (answered, cant_tell) in sorted(answers.items())
    ]


# --------------------------------------------------------------------------------------------
# Factor rankings
# --------------------------------------------------------------------------------------------


def _factor_ranks(ranking: Sequence[Sequence[str]], factor_keys: Sequence[str]) -> npt.NDArray[np.float64]:
    """Fractional ranks 1..n of every factor (1 = most important) from a ranking given as levels.

    Factors of one level share the average of the positions they occupy (``rankdata``'s
    "average" method); factors missing from the ranking form one tie group after the last level,
    the same convention as ``trainer.core.heron.Ranking.factor_ranks``.
    """
    index = {key: i for i, key in enumerate(factor_keys)}
    level_of = np.full(len(factor_keys), len(ranking), dtype=np.float64)
    seen: set[str] = set()
    for level, group in enumerate(ranking):
        if isinstance(group, str) or not group:
            raise ValueError(f"level {level} must be a non-empty sequence of factor keys, got {group!r}")
        for key in group:
            if key not in index:
                raise ValueError(f"unknown factor {key!r}")
            if key in seen:
                raise ValueError(f"factor {key!r} appears more than once in one ranking")
            seen.add(key)
            level_of[index[key]] = level
    return np.asarray(stats.rankdata(level_of, method="average"), dtype=np.float64)


def kendall_w(ranks: npt.ArrayLike) -> float:
    """Kendall's W for an (m raters x n items) matrix of fractional ranks, with the tie correction.

    W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), where S is the sum of squared deviations of the
    items' rank sums from their mean m(n+1)/2 and T_j sums t^3 - t over rater j's tie groups.
    Not in scipy or statsmodels, hence written out; it equals scipy's tie-corrected Friedman
    chi-square divided by m(n-1). NaN for fewer than two raters or items, or when every rater
    ties every item (zero denominator).
    """
    matrix = np.asarray(ranks, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"ranks must be a 2-D (raters x items) array, got shape {matrix.shape}")
    m, n = matrix.shape
    if m < 2 or n < 2:
        return math.nan
    rank_sums = matrix.sum(axis=0)
    spread = float(np.sum((rank_sums - m * (n + 1) / 2) ** 2))
    ties = 0.0
    for row in matrix:
        _, sizes = np.unique(row, return_counts=True)
        ties += float(np.sum(sizes.astype(np.float64) ** 3 - sizes))
    denominator = m**2 * (n**3 - n) - m * ties
    return 12 * spread / denominator if denominator > 0 else math.nan


def ranking_concordance(rankings: Sequence[Sequence[Sequence[str]]], factor_keys: Sequence[str]) -> RankingConcordance:
    """Kendall's tau-b between every two factor rankings and Kendall's W over all of them.

    Each ranking is a list of levels, most important first, each level a list of factor keys
    that are tied. tau-b (``scipy.stats.kendalltau``) accounts for the ties. The diagonal is 1 for
    a ranking that orders at least two factors apart and NaN for one that ties everything (its
    tau with anyone is undefined, so NaN too). W is NaN with fewer than two rankings or factors.
    """
    if len(set(factor_keys)) != len(factor_keys):
        raise ValueError("factor_keys must be distinct")
    m = len(rankings)
    ranks = np.array([_factor_ranks(ranking, factor_keys) for ranking in rankings], dtype=np.float64)
    ranks = ranks.reshape(m, len(factor_keys))
    informative = [np.unique(row).size > 1 for row in ranks]
    tau = np.full((m, m), math.nan)
    for i in range(m):
        if not informative[i]:
            continue
        tau[i, i] = 1.0
        for j in range(i + 1, m):
            if informative[j]:
                value = float(stats.kendalltau(ranks[i], ranks[j], variant="b").statistic)
                tau[i, j] = tau[j, i] = value
    return RankingConcordance(tau=tau, w=kendall_w(ranks))
