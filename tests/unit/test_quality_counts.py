"""The count-based statistics (what the dashboard computes from SQL GROUP BY rows) equal the Answer-based ones."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from labeling import quality
from labeling.quality import CANT_TELL, LABELS, Answer


def _random_answers(rng: np.random.Generator, *, queries: int, annotators: int, max_answers: int) -> list[Answer]:
    labels = [*LABELS, CANT_TELL]
    answers = []
    for query in range(queries):
        who = rng.choice(annotators, size=int(rng.integers(1, max_answers + 1)), replace=False)
        truth = int(rng.integers(0, 3))
        for annotator in who:
            label = labels[truth] if rng.random() < 0.6 else labels[int(rng.integers(0, 4))]
            answers.append(Answer(query_id=query, annotator=f"u{annotator:02d}", label=label))
    return answers


def _label_counts(answers: list[Answer]) -> dict[int, tuple[int, ...]]:
    """query -> its label counts over LABELS, "can't tell" left out (what the SQL groups)."""
    per_query: dict[int, Counter[str]] = defaultdict(Counter)
    for answer in answers:
        per_query[answer.query_id][answer.label] += 1
    return {query: tuple(counts[label] for label in LABELS) for query, counts in per_query.items()}


def _histogram(answers: list[Answer]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct count vectors and how many queries share each (GROUP BY the counts)."""
    shared = Counter(_label_counts(answers).values())
    return np.array(list(shared), dtype=np.int64).reshape(-1, len(LABELS)), np.array(list(shared.values()))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_alpha_and_kappa_from_counts_equal_the_answer_based_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    answers = _random_answers(rng, queries=int(rng.integers(1, 300)), annotators=8, max_answers=int(rng.integers(1, 6)))
    counts, weights = _histogram(answers)
    assert _same(quality.krippendorff_alpha_from_counts(counts, weights), quality.krippendorff_alpha(answers))
    assert _same(quality.fleiss_kappa_from_counts(counts, weights), quality.fleiss_kappa(answers))
    # Unweighted (one row per query) gives the same too.
    per_query = np.array(list(_label_counts(answers).values())).reshape(-1, len(LABELS))
    assert _same(quality.krippendorff_alpha_from_counts(per_query), quality.krippendorff_alpha(answers))


def test_counts_undefined_cases_are_nan() -> None:
    assert math.isnan(quality.krippendorff_alpha_from_counts(np.zeros((0, 3))))
    assert math.isnan(quality.krippendorff_alpha_from_counts([[1, 0, 0], [0, 1, 0]]))  # no query with two answers
    assert math.isnan(quality.krippendorff_alpha_from_counts([[2, 0, 0], [3, 0, 0]]))  # one label only
    assert math.isnan(quality.fleiss_kappa_from_counts([[2, 0, 0]], [5]))
    with pytest.raises(ValueError):
        quality.krippendorff_alpha_from_counts([[1, 1, 0]], [1, 2])


@pytest.mark.parametrize("seed", range(8))
def test_annotator_report_from_counts_equals_the_answer_based_one(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    answers = _random_answers(rng, queries=150, annotators=6, max_answers=4)
    gold = {query: LABELS[int(rng.integers(0, 3))] for query in range(0, 150, 7)}
    # Repeats: new query ids, answered by one annotator who answered the original.
    by_query: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_query[answer.query_id].append(answer)
    repeats: dict[int, int | quality.RepeatOf] = {}
    for original in range(1, 150, 5):
        first = by_query[original][0]
        repeat_id = 1000 + original
        same_order = bool(rng.random() < 0.7)
        repeats[repeat_id] = original if same_order else quality.RepeatOf(original=original, same_order=False)
        label = first.label if rng.random() < 0.7 else [*LABELS, CANT_TELL][int(rng.integers(0, 4))]
        answers.append(Answer(query_id=repeat_id, annotator=first.annotator, label=label))
    expected = quality.annotator_report(answers, gold=gold, repeats=repeats)

    # What the SQL groups: per annotator counts, gold answers, repeat pairs, and each answer with its query's counts.
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for answer in answers:
        tallies[answer.annotator][answer.label == CANT_TELL] += 1
    labels = {(a.query_id, a.annotator): a.label for a in answers}
    gold_rows = Counter((a.annotator, a.label, gold[a.query_id]) for a in answers if a.query_id in gold)
    repeat_rows: Counter[tuple[str, str, str, bool]] = Counter()
    for repeat_id, target in repeats.items():
        of = target if isinstance(target, quality.RepeatOf) else quality.RepeatOf(original=target)
        for (query, annotator), label in labels.items():
            if query == repeat_id and (of.original, annotator) in labels:
                repeat_rows[(annotator, labels[(of.original, annotator)], label, of.same_order)] += 1
    counts = _label_counts(answers)
    agreement_rows = Counter((a.annotator, a.label, counts[a.query_id]) for a in answers)
    report = quality.annotator_report_from_counts(
        answers={annotator: (n[0], n[1]) for annotator, n in tallies.items()},
        gold=[(*key, n) for key, n in gold_rows.items()],
        repeats=[(*key, n) for key, n in repeat_rows.items()],
        agreement=[(*key, n) for key, n in agreement_rows.items()],
    )
    assert [row.annotator for row in report] == [row.annotator for row in expected]
    for got, want in zip(report, expected, strict=True):
        assert (got.answered, got.cant_tell) == (want.answered, want.cant_tell)
        for kind in ("gold", "self_consistency", "agreement"):
            a, b = getattr(got, kind), getattr(want, kind)
            assert (a.n, a.hits) == (b.n, b.hits), kind
            assert _same(a.value, b.value) and _same(a.low, b.low) and _same(a.high, b.high)
