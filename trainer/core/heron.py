"""HERON core: turn factor rankings into pairwise preference labels, in plain numpy.

HERON (hierarchical reward modelling) asks annotators to *rank the reward factors* of a task
instead of comparing clips one by one. Every pair of clips is then labelled automatically by
walking the ranking from the most important factor down: the first factor on which the two clips
differ by more than a margin decides the pair. The reward model is trained on those labels.

This module is the pure, vectorised core of that labelling (no Django, no torch) so that it can
be property-tested and benchmarked on its own, and imported from Celery workers and the trainer.
It lives in the Django-free core, ``trainer/core/heron.py`` (formerly ``trainer/heron.py``):

* :func:`margins`           -- per-factor margins ``delta_k = sigma_k * std(F[:, k])`` (ddof=1).
* :func:`compare`           -- the level-by-level comparator for many pairs at once.
* :class:`Ranking`          -- one annotator's ranking: levels (a factor, or a tie group) + sigmas.
* :func:`sample_pairs`      -- all pairs of the pool, or a uniform sample of distinct pairs.
* :func:`batch_pairs`       -- the reference's scheme: all 120 pairs inside random batches of 16.
* :func:`label_pairs`       -- end to end: margins, one comparator pass per ranking, soft targets.

Conventions used throughout:

* A *level* is a tuple of factor indices.  One index: an ordinary HERON level.  Several
  indices: a *tie group* (our extension), the factors judged equally important, compared
  through their summed standardised difference.
* Levels are 0-based, most important first.
* Labels are ``+1`` (a preferred), ``-1`` (b preferred) and ``0`` (tie); the deciding level is
  the 0-based level index, ``-1`` for a tie.
* All arithmetic is float64. Comparisons are strict (``d == delta`` does not decide), and a NaN
  difference never decides; :func:`label_pairs` rejects non-finite factors up front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeGuard

import numpy as np
import numpy.typing as npt

__all__ = [
    "HeronLabels",
    "LevelSpec",
    "MarginScope",
    "Ranking",
    "batch_pairs",
    "compare",
    "label_pairs",
    "margins",
    "sample_pairs",
]

MarginScope = Literal["pool", "batch"]
#: A level as callers may write it: one factor index, or a sequence of indices (a tie group).
LevelSpec = int | np.integer | Sequence[int] | Sequence[np.integer]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Largest pool for which the upper-triangle linear index of a pair fits comfortably in int64.
_MAX_CLIPS = 2**31


# --------------------------------------------------------------------------------------------
# Validation helpers (one place, shared by Ranking, compare and label_pairs)
# --------------------------------------------------------------------------------------------


def _is_index(value: object) -> TypeGuard[int | np.integer]:
    """An integer usable as an index; bools are rejected although Python treats them as ints."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _normalise_levels(levels: Sequence[LevelSpec], n_factors: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Return ``levels`` as a tuple of tuples of ints, or raise ValueError.

    Checks: every level is non-empty, indices are integers >= 0 (and < n_factors when given),
    and no factor appears twice anywhere in the ranking. A bare int is accepted as a one-factor
    level so callers can write ``[0, (1, 2), 3]``.
    """
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence | np.ndarray):
        raise ValueError(f"levels must be a sequence of levels, got {type(levels).__name__}")
    normalised: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for position, level in enumerate(levels):
        members: tuple[object, ...]
        if _is_index(level):
            members = (level,)
        elif isinstance(level, Sequence | np.ndarray) and not isinstance(level, str | bytes):
            members = tuple(level)
        else:
            raise ValueError(f"level {position} must be a factor index or a sequence of them: {level!r}")
        if not members:
            raise ValueError(f"level {position} is empty")
        indices: list[int] = []
        for member in members:
            if not _is_index(member):
                raise ValueError(f"level {position} holds a non-integer factor index: {member!r}")
            index = int(member)
            if index < 0 or (n_factors is not None and index >= n_factors):
                bound = f"[0, {n_factors})" if n_factors is not None else ">= 0"
                raise ValueError(f"factor index {index} in level {position} is out of range {bound}")
            if index in seen:
                raise ValueError(f"factor {index} appears more than once in the ranking")
            seen.add(index)
            indices.append(index)
        normalised.append(tuple(indices))
    return tuple(normalised)


def _per_factor_vector(values: npt.ArrayLike, n_factors: int, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_factors,):
        raise ValueError(f"{name} must have shape ({n_factors},), got {array.shape}")
    return array


def _check_signs(signs: npt.ArrayLike, n_factors: int) -> npt.NDArray[np.int8]:
    array = np.asarray(signs)
    if array.shape != (n_factors,):
        raise ValueError(f"signs must have shape ({n_factors},), got {array.shape}")
    if not np.all((array == 1) | (array == -1)):
        raise ValueError("signs must be +1 (higher is better) or -1 (lower is better)")
    return array.astype(np.int8)


def _check_non_negative(array: FloatArray, name: str) -> None:
    # `not all(x >= 0)` also rejects NaN, which would silently turn every comparison into a tie.
    if not np.all(array >= 0):
        raise ValueError(f"{name} must be non-negative and not NaN")


def _check_sigmas(sigmas: npt.ArrayLike, n_factors: int, name: str = "sigmas") -> FloatArray:
    array = _per_factor_vector(sigmas, n_factors, name)
    _check_non_negative(array, name)
    return array


# --------------------------------------------------------------------------------------------
# Margins and the comparator
# --------------------------------------------------------------------------------------------


def margins(factors: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """delta_k = sigma_k * std(factors[:, k]), sample standard deviation (ddof=1).

    ddof=1 matches the reference implementation, which used ``torch.std`` (unbiased by
    default). ``factors`` is (n_clips, n_factors) with at least two clips; ``sigmas`` is
    (n_factors,) and non-negative. Returns float64 (n_factors,).
    """
    factor_array = np.asarray(factors, dtype=np.float64)
    if factor_array.ndim != 2:
        raise ValueError(f"factors must be 2-D (n_clips, n_factors), got shape {factor_array.shape}")
    if factor_array.shape[0] < 2:
        raise ValueError("margins need at least two clips (sample standard deviation, ddof=1)")
    sigma_array = _check_sigmas(sigmas, factor_array.shape[1])
    delta: FloatArray = sigma_array * factor_array.std(axis=0, ddof=1)
    return delta


def _per_factor_or_per_pair(values: npt.ArrayLike, n_pairs: int, n_factors: int, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape not in ((n_factors,), (n_pairs, n_factors)):
        raise ValueError(f"{name} must have shape ({n_factors},) or ({n_pairs}, {n_factors}), got {array.shape}")
    _check_non_negative(array, name)
    return array


def _rows(values: FloatArray, factor: int, rows: IntArray | None) -> FloatArray | float:
    """Factor ``factor`` of a per-factor (K,) or per-pair (n, K) array, restricted to ``rows``."""
    if values.ndim == 1:
        return float(values[factor])
    column = values[:, factor]
    return column if rows is None else column.take(rows)


def _group_threshold(
    group: tuple[int, ...],
    rows: IntArray | None,
    margin_values: FloatArray,
    scale_values: FloatArray,
    sigmas: FloatArray | None,
) -> FloatArray | float:
    """Threshold of a tie group: the mean of its members' sigma_k.

    With ``sigmas`` this is exact. Without, sigma_k is recovered as delta_k / std_k, which is only
    possible for factors with std_k > 0: constant factors (std 0, delta 0) are left out of the mean,
    and a group of constant factors gets threshold 0 (its standardised difference is 0 anyway, and
    the comparison is strict, so it never decides).
    """
    if sigmas is not None:
        return float(np.mean(sigmas[list(group)]))
    total: FloatArray | float = 0.0
    count: FloatArray | float = 0.0
    for factor in group:
        delta = _rows(margin_values, factor, rows)
        scale = _rows(scale_values, factor, rows)
        varying = np.greater(scale, 0)
        total = total + np.divide(delta, scale, out=np.zeros(np.shape(varying)), where=varying)
        count = count + varying
    return np.divide(total, count, out=np.zeros(np.shape(count)), where=np.greater(count, 0))


class _DiffColumn:
    """Lazy access to the factor differences ``a[:, k] - b[:, k]``, for all pairs or some rows.

    :func:`compare` backs it with one (n_pairs, K) difference array; :func:`label_pairs` with one
    contiguous column per ranked factor, computed once and shared by all rankings.
    """

    def __init__(self, column_of_factor: Callable[[int], FloatArray]) -> None:
        self._column_of_factor = column_of_factor

    def __call__(self, factor: int, rows: IntArray | None) -> FloatArray:
        column = self._column_of_factor(factor)
        return column if rows is None else column.take(rows)


def _decide(
    diff_column: _DiffColumn,
    n_pairs: int,
    levels: tuple[tuple[int, ...], ...],
    signs: npt.NDArray[np.int8],
    margin_values: FloatArray,
    scale_values: FloatArray | None,
    sigmas: FloatArray | None,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int16]]:
    """Vectorised level-by-level comparator on pre-validated inputs.

    Speed matters here (millions of pairs per labelling run), so instead of a boolean
    "undecided" mask over all pairs we keep the *indices* of the undecided pairs and shrink them
    level by level: the first level touches every pair, later levels only the (usually few) pairs
    still tied. Labels are computed branch-free as ``int8(d > t) - int8(d < -t)``.
    """
    label = np.zeros(n_pairs, dtype=np.int8)
    level = np.full(n_pairs, -1, dtype=np.int16)
    undecided_rows: IntArray | None = None  # None: no pair decided yet, work on all of them
    for level_index, group in enumerate(levels):
        if undecided_rows is not None and undecided_rows.size == 0:
            break
        score: FloatArray
        threshold: FloatArray | float
        if len(group) == 1:
            factor = group[0]
            score = diff_column(factor, undecided_rows)
            threshold = _rows(margin_values, factor, undecided_rows)
            # s_k = -1 flips the comparison instead of negating d (negation is exact anyway).
            flip = signs[factor] < 0
        else:
            assert scale_values is not None  # checked by the public callers
            n_rows = n_pairs if undecided_rows is None else undecided_rows.size
            group_score: FloatArray | None = None
            for factor in group:
                scale = _rows(scale_values, factor, undecided_rows)
                difference = diff_column(factor, undecided_rows)
                if isinstance(scale, float):  # one std per factor: skip constants, plain division
                    if scale <= 0:
                        continue
                    term = difference / scale
                else:  # one std per pair (batch scope): guard the 0/0 of batches where k is constant
                    term = np.divide(difference, scale, out=np.zeros(n_rows), where=scale > 0)
                if group_score is None:
                    group_score = term if signs[factor] > 0 else np.negative(term, out=term)
                elif signs[factor] > 0:
                    group_score += term
                else:
                    group_score -= term
            score = np.zeros(n_rows) if group_score is None else group_score
            threshold = _group_threshold(group, undecided_rows, margin_values, scale_values, sigmas)
            flip = False
        above = score > threshold
        below = score < np.negative(threshold)
        if flip:
            above, below = below, above
        verdict = above.view(np.int8) - below.view(np.int8)
        still_undecided = verdict == 0
        # level_index where decided, -1 where not, without a masked (branchy) assignment.
        deciding_level = still_undecided.astype(np.int16)
        deciding_level *= -(level_index + 1)
        deciding_level += level_index
        if undecided_rows is None:
            label = verdict
            level = deciding_level
            if not still_undecided.all():  # while nothing is decided, stay full-width (no gathers)
                undecided_rows = np.flatnonzero(still_undecided)
        else:
            label[undecided_rows] = verdict
            level[undecided_rows] = deciding_level
            undecided_rows = np.compress(still_undecided, undecided_rows)
    return label, level


def _check_tie_group_inputs(levels: tuple[tuple[int, ...], ...], scales: FloatArray | None) -> None:
    if scales is None and any(len(group) > 1 for group in levels):
        raise ValueError("a tie-group level needs `scales` (the per-factor standard deviations)")


def compare(
    a: np.ndarray,
    b: np.ndarray,
    *,
    levels: Sequence[Sequence[int]],
    signs: np.ndarray,
    margins: np.ndarray,
    scales: np.ndarray | None = None,
    sigmas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """a, b: (n_pairs, n_factors) factor totals. levels: factor indices per level, most important first.
    Returns (label, level): label int8, +1 a preferred, -1 b preferred, 0 tie; level int16, index of the
    deciding level or -1 for a tie. scales (std per factor) is needed only for tie-group levels.

    For a one-factor level k: ``d = s_k * (a_k - b_k)``; ``d > delta_k`` prefers a, ``d < -delta_k``
    prefers b, otherwise the next level is tried (strict: ``d == delta_k`` does not decide).

    For a tie-group level G: ``d = sum_{k in G} s_k * (a_k - b_k) / std_k`` (factors with
    std_k == 0 contribute 0) against the threshold ``mean(sigma_k for k in G)``. Pass ``sigmas``
    (per factor, as used to build ``margins``) to get that threshold exactly; without it sigma_k is
    recovered as ``margins_k / scales_k``, which is impossible for a constant factor, so constant
    factors are then left out of the mean (documented fallback; :func:`label_pairs` always passes
    ``sigmas``). ``sigmas`` is not used for one-factor levels: those compare against ``margins``.

    ``margins`` and ``scales`` may be per factor (n_factors,) or per pair (n_pairs, n_factors);
    the latter serves margin scope "batch", where every batch has its own standard deviations.
    A bare int in ``levels`` is accepted as a one-factor level. Inputs are converted to float64.
    """
    a_array = np.asarray(a, dtype=np.float64)
    b_array = np.asarray(b, dtype=np.float64)
    if a_array.ndim != 2 or a_array.shape != b_array.shape:
        raise ValueError(
            f"a and b must be 2-D arrays of the same shape (n_pairs, n_factors), got {a_array.shape}"
            f" and {b_array.shape}"
        )
    n_pairs, n_factors = a_array.shape
    normalised_levels = _normalise_levels(levels, n_factors)
    sign_array = _check_signs(signs, n_factors)
    margin_array = _per_factor_or_per_pair(margins, n_pairs, n_factors, "margins")
    scale_array = None if scales is None else _per_factor_or_per_pair(scales, n_pairs, n_factors, "scales")
    _check_tie_group_inputs(normalised_levels, scale_array)
    sigma_array = None if sigmas is None else _check_sigmas(sigmas, n_factors)
    difference = a_array - b_array
    return _decide(
        _DiffColumn(lambda factor: difference[:, factor]),
        n_pairs,
        normalised_levels,
        sign_array,
        margin_array,
        scale_array,
        sigma_array,
    )


# --------------------------------------------------------------------------------------------
# Rankings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """One annotator's ranking of the reward factors.

    ``levels``: most important first; each level is a tuple of factor indices, one index for an
    ordinary level, several for a tie group. Factors that appear in no level never decide a pair.
    ``sigmas``: optional per-factor margin multipliers overriding the project's (for example an
    annotator who asked for a coarser margin); ``None`` uses the project sigmas.

    Both fields are normalised to tuples on construction (so a Ranking is immutable and hashable)
    and validated here, once: non-empty levels, integer indices >= 0, no factor twice, sigmas
    finite and >= 0. The upper bound of the indices is checked by :meth:`validate_for`.
    """

    levels: tuple[tuple[int, ...], ...]
    sigmas: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        levels = _normalise_levels(self.levels)
        if not levels:
            raise ValueError("a ranking needs at least one level")
        object.__setattr__(self, "levels", levels)
        if self.sigmas is not None:
            sigma_array = np.asarray(self.sigmas, dtype=np.float64)
            if sigma_array.ndim != 1 or not np.all(np.isfinite(sigma_array)):
                raise ValueError("ranking sigmas must be a 1-D sequence of finite numbers")
            _check_non_negative(sigma_array, "ranking sigmas")
            object.__setattr__(self, "sigmas", tuple(float(s) for s in sigma_array))

    @classmethod
    def from_levels(cls, levels: Sequence[LevelSpec], sigmas: npt.ArrayLike | None = None) -> Ranking:
        """Build from loose input: ``Ranking.from_levels([2, (0, 1), 3], sigmas=[...])``."""
        return cls(levels=levels, sigmas=sigmas)  # type: ignore[arg-type]

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def factors(self) -> tuple[int, ...]:
        """The ranked factors, most important first."""
        return tuple(factor for group in self.levels for factor in group)

    def validate_for(self, n_factors: int) -> None:
        """Raise ValueError unless every index is < n_factors and sigmas (if any) has n_factors entries."""
        _normalise_levels(self.levels, n_factors)
        if self.sigmas is not None and len(self.sigmas) != n_factors:
            raise ValueError(f"ranking sigmas must have {n_factors} entries, got {len(self.sigmas)}")

    def sigma_array(self, default: npt.ArrayLike) -> FloatArray:
        """This ranking's sigmas if it overrides them, else ``default`` (the project's)."""
        return np.asarray(self.sigmas if self.sigmas is not None else default, dtype=np.float64)


def _as_ranking(ranking: Ranking | Sequence[LevelSpec]) -> Ranking:
    return ranking if isinstance(ranking, Ranking) else Ranking.from_levels(ranking)


# --------------------------------------------------------------------------------------------
# Pair sampling
# --------------------------------------------------------------------------------------------


def _pairs_from_linear_index(linear: IntArray, n_clips: int) -> IntArray:
    """Map row-major upper-triangle indices to pairs (i, j), i < j, in closed form.

    The row-major index of (i, j) is the reverse of the colexicographic index of the mirrored pair
    (n-1-j, n-1-i), and the colex index c of (p, q), p < q, is q(q-1)/2 + p, inverted by
    q = floor((1 + sqrt(1 + 8c)) / 2). The float square root can be off by one for huge c, so q
    is corrected with exact integer arithmetic. Sorted linear indices give pairs sorted by (i, j),
    i.e. the order of ``np.triu_indices(n_clips, 1)``.
    """
    total = n_clips * (n_clips - 1) // 2
    colex = (total - 1) - linear
    q_float = np.sqrt(8.0 * colex + 1.0)
    q_float += 1.0
    q_float *= 0.5
    q = q_float.astype(np.int64)  # truncation == floor, the argument is positive
    q -= ((q * (q - 1)) >> 1) > colex
    q += ((q * (q + 1)) >> 1) <= colex
    pairs = np.empty((linear.shape[0], 2), dtype=np.int64)
    np.subtract(n_clips - 1, q, out=pairs[:, 0])
    # second = n - 1 - p with p = colex - q(q-1)/2
    np.subtract((n_clips - 1) + ((q * (q - 1)) >> 1), colex, out=pairs[:, 1])
    return pairs


def sample_pairs(n_clips: int, *, cap: int = 200_000, rng: np.random.Generator) -> np.ndarray:
    """Pairs of clips to label: (n_pairs, 2) int64 with i < j, all distinct, sorted by (i, j).

    All n(n-1)/2 pairs while that is <= ``cap``; above it, a uniform sample of ``cap`` distinct
    unordered pairs, drawn as distinct linear indices of the upper triangle (numpy's
    ``Generator.choice`` without replacement: a permutation for small populations, Floyd's
    algorithm for huge ones, so no pair list is ever materialised) and mapped to (i, j) in closed
    form.
    """
    if not _is_index(n_clips) or n_clips < 0:
        raise ValueError(f"n_clips must be a non-negative integer, got {n_clips!r}")
    if n_clips > _MAX_CLIPS:
        raise ValueError(f"n_clips must be at most {_MAX_CLIPS}")
    if not _is_index(cap) or cap < 0:
        raise ValueError(f"cap must be a non-negative integer, got {cap!r}")
    n_clips = int(n_clips)
    total = n_clips * (n_clips - 1) // 2
    if total <= cap:
        linear = np.arange(total, dtype=np.int64)
    else:
        linear = rng.choice(total, size=int(cap), replace=False, shuffle=False).astype(np.int64)
        linear.sort()
    return _pairs_from_linear_index(linear, n_clips)


def _draw_distinct_rows(n_clips: int, n_rows: int, row_size: int, rng: np.random.Generator) -> IntArray:
    """(n_rows, row_size) clip indices, each row drawn uniformly without replacement.

    Small pools: argpartition of random keys (chunked to bound memory). Large pools: draw with
    replacement and redraw the (rare) rows that contain a duplicate.
    """
    rows = np.empty((n_rows, row_size), dtype=np.int64)
    if n_clips <= 4096:
        chunk = max(1, 4_000_000 // n_clips)
        for start in range(0, n_rows, chunk):
            stop = min(n_rows, start + chunk)
            keys = rng.random((stop - start, n_clips))
            rows[start:stop] = np.argpartition(keys, row_size - 1, axis=1)[:, :row_size]
        return rows
    pending = np.arange(n_rows)
    while pending.size:
        draw = rng.integers(0, n_clips, size=(pending.size, row_size))
        ordered = np.sort(draw, axis=1)
        has_duplicate = np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)
        rows[pending[~has_duplicate]] = draw[~has_duplicate]
        pending = pending[has_duplicate]
    return rows


def batch_pairs(
    n_clips: int, *, batch_size: int = 16, n_batches: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The reference robotics scheme: ``n_batches`` times, draw ``batch_size`` clips without
    replacement and take all ``batch_size * (batch_size - 1) / 2`` pairs among them (120 for 16).

    Returns ``(pairs, batch_ids)``: pairs (n_batches * n_per_batch, 2) int64 with i < j (a pair may
    recur across batches, as in the reference), and batch_ids int64, the batch of each pair, so
    that :func:`label_pairs` can compute margins per batch (``margin_scope="batch"``).
    """
    for name, value in (("n_clips", n_clips), ("batch_size", batch_size), ("n_batches", n_batches)):
        if not _is_index(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if batch_size < 2 or batch_size > n_clips:
        raise ValueError(f"batch_size must be between 2 and n_clips ({n_clips}), got {batch_size}")
    clips = _draw_distinct_rows(int(n_clips), int(n_batches), int(batch_size), rng)
    first, second = np.triu_indices(int(batch_size), 1)
    left, right = clips[:, first], clips[:, second]
    pairs = np.stack((np.minimum(left, right), np.maximum(left, right)), axis=-1).reshape(-1, 2)
    batch_ids = np.repeat(np.arange(int(n_batches), dtype=np.int64), first.size)
    return pairs, batch_ids


# --------------------------------------------------------------------------------------------
# Labelling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeronLabels:
    """Labelled pairs, ready for the reward-model trainer (all arrays have one row per pair).

    ``target`` is P(a preferred over b): 1 or 0 for a single ranking, the fraction of the
    rankings that decided the pair and preferred a for several, 0.5 for a kept tie.
    ``weight`` is the level weight (see :func:`label_pairs`). ``level`` is the deciding level
    (0-based; for several rankings the most important deciding level among them; -1 for a tie).
    ``n_votes`` counts the rankings that decided the pair. ``batch_ids`` is the batch of each pair
    when the pairs came from :func:`batch_pairs`, else None.
    """

    pairs: npt.NDArray[np.int64]
    target: npt.NDArray[np.float32]
    weight: npt.NDArray[np.float32]
    level: npt.NDArray[np.int16]
    n_votes: npt.NDArray[np.int16]
    batch_ids: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


def _batch_scales(factors: FloatArray, pairs: IntArray, batch_ids: IntArray) -> FloatArray:
    """Per-pair standard deviations (ddof=1) over the clips of the pair's batch: (n_pairs, K).

    A batch's clips are the distinct clips appearing in its pairs (all ``batch_size`` clips for
    :func:`batch_pairs`). A batch with a single clip has no sample std; it gets 0, which is harmless
    since all its pairs compare that clip with itself.
    """
    n_clips, n_factors = factors.shape
    _, batch_of_pair = np.unique(batch_ids, return_inverse=True)
    batch_of_pair = batch_of_pair.reshape(-1)
    n_batch_groups = int(batch_of_pair.max()) + 1 if batch_of_pair.size else 0
    keys = np.unique(np.concatenate((batch_of_pair, batch_of_pair)) * n_clips + pairs.T.reshape(-1))
    member_batch, member_clip = np.divmod(keys, n_clips)
    counts = np.bincount(member_batch, minlength=n_batch_groups).astype(np.float64)
    batch_std = np.zeros((n_batch_groups, n_factors))
    for factor in range(n_factors):
        values = factors[member_clip, factor]
        mean = np.bincount(member_batch, weights=values, minlength=n_batch_groups) / counts
        squares = np.bincount(member_batch, weights=(values - mean[member_batch]) ** 2, minlength=n_batch_groups)
        np.divide(squares, counts - 1, out=batch_std[:, factor], where=counts > 1)
    np.sqrt(batch_std, out=batch_std)
    return batch_std[batch_of_pair]


def _level_weights(n_levels: int, alpha: float) -> FloatArray:
    """alpha ** (L - 1 - level) for 0-based levels: the most important level gets alpha**(L-1)."""
    return np.asarray(alpha, dtype=np.float64) ** np.arange(n_levels - 1, -1, -1, dtype=np.float64)


def label_pairs(
    factors: np.ndarray,
    pairs: np.ndarray,
    *,
    rankings: Sequence[Ranking],
    signs: np.ndarray,
    sigmas: np.ndarray,
    margin_scope: MarginScope = "pool",
    batch_ids: np.ndarray | None = None,
    keep_ties: bool = False,
    level_weight_alpha: float = 1.0,
) -> HeronLabels:
    """Label ``pairs`` of clips from one or more factor rankings.

    ``factors`` (n_clips, K) are the factor totals of the project's clip pool, ``pairs`` (n, 2)
    row indices into it. Margins are ``sigma_k * std_k`` with std over the whole pool
    (``margin_scope="pool"``) or over each batch's clips (``"batch"``, needs ``batch_ids``, as the
    reference robotics code did); a ranking's own ``sigmas`` override the project ``sigmas``.
    ``batch_ids``, when given (in either scope), are carried through to the result.

    Every ranking labels every pair on its own (:func:`compare`). The target is the fraction of the
    rankings that decided the pair and preferred a; rankings that tie on a pair do not vote, so
    disagreement becomes a soft target. Pairs no ranking decides are ties: dropped, or kept with
    target 0.5 and ``n_votes`` 0 when ``keep_ties``. A pair whose votes split evenly also gets 0.5
    but is always kept: it records real disagreement, unlike a tie.

    Level weighting: a ranking with L levels that decides a pair at 0-based level l gives it weight
    ``alpha ** (L - 1 - l)`` (the design's ``alpha ** (L - l)`` with 1-based l): the most important
    level weighs ``alpha ** (L - 1)``, the least ``alpha ** 0 = 1``. With several rankings the
    weight is the mean over the deciding rankings; a kept tie weighs 1 (like the least important
    level). ``alpha = 1`` (default) turns weighting off. Weights are not normalised.
    """
    factor_array = np.asarray(factors, dtype=np.float64)
    if factor_array.ndim != 2:
        raise ValueError(f"factors must be 2-D (n_clips, n_factors), got shape {factor_array.shape}")
    n_clips, n_factors = factor_array.shape
    if n_clips < 2:
        raise ValueError("label_pairs needs a pool of at least two clips (sample std, ddof=1)")
    if not np.all(np.isfinite(factor_array)):
        raise ValueError("factors must be finite")
    pair_array = np.asarray(pairs)
    if pair_array.ndim != 2 or pair_array.shape[1] != 2 or not np.issubdtype(pair_array.dtype, np.integer):
        raise ValueError(f"pairs must be an integer array of shape (n_pairs, 2), got {pair_array.shape}")
    pair_array = pair_array.astype(np.int64, copy=False)
    if pair_array.size and (pair_array.min() < 0 or pair_array.max() >= n_clips):
        raise ValueError(f"pairs hold clip indices outside [0, {n_clips})")
    n_pairs = pair_array.shape[0]
    sign_array = _check_signs(signs, n_factors)
    project_sigmas = _check_sigmas(sigmas, n_factors)
    if isinstance(rankings, Ranking) or not rankings:
        raise ValueError("rankings must be a non-empty sequence of Ranking")
    if len(rankings) > np.iinfo(np.int16).max:
        raise ValueError("at most 32767 rankings can vote on a pair (n_votes is int16)")
    for ranking in rankings:
        if not isinstance(ranking, Ranking):
            raise ValueError(f"rankings must hold Ranking objects, got {type(ranking).__name__}")
        ranking.validate_for(n_factors)
    if not (math.isfinite(level_weight_alpha) and level_weight_alpha > 0):
        raise ValueError(f"level_weight_alpha must be a finite number > 0, got {level_weight_alpha!r}")

    batch_array: IntArray | None = None
    scales: FloatArray
    if margin_scope == "pool":
        scales = factor_array.std(axis=0, ddof=1)
        if batch_ids is not None:
            batch_array = np.asarray(batch_ids, dtype=np.int64)
    elif margin_scope == "batch":
        if batch_ids is None:
            raise ValueError('margin_scope="batch" needs batch_ids (see batch_pairs)')
        batch_array = np.asarray(batch_ids, dtype=np.int64)
    else:
        raise ValueError(f'margin_scope must be "pool" or "batch", got {margin_scope!r}')
    if batch_array is not None and batch_array.shape != (n_pairs,):
        raise ValueError(f"batch_ids must have shape ({n_pairs},), got {batch_array.shape}")
    if margin_scope == "batch":
        assert batch_array is not None
        scales = _batch_scales(factor_array, pair_array, batch_array)

    # One contiguous difference column per ranked factor, shared by every ranking.
    used_factors = sorted({factor for ranking in rankings for factor in ranking.factors})
    first, second = np.ascontiguousarray(pair_array[:, 0]), np.ascontiguousarray(pair_array[:, 1])
    diff_by_factor: dict[int, FloatArray] = {}
    for factor in used_factors:
        column = np.ascontiguousarray(factor_array[:, factor])
        diff_by_factor[factor] = column.take(first) - column.take(second)
    diff_column = _DiffColumn(diff_by_factor.__getitem__)

    weighted = level_weight_alpha != 1.0
    votes_for_a = np.zeros(n_pairs, dtype=np.int16)
    n_votes = np.zeros(n_pairs, dtype=np.int16)
    # Levels seen as uint16 turn a tie (-1) into 65535, so a running minimum over the rankings keeps
    # the most important deciding level and leaves pairs that no ranking decides at -1.
    best_level = np.full(n_pairs, -1, dtype=np.int16)
    best_level_unsigned = best_level.view(np.uint16)
    weight_sum = np.zeros(n_pairs) if weighted else None
    for ranking in rankings:
        ranking_sigmas = ranking.sigma_array(project_sigmas)
        label, level = _decide(
            diff_column,
            n_pairs,
            ranking.levels,
            sign_array,
            ranking_sigmas * scales,
            scales,
            ranking_sigmas,
        )
        votes_for_a += label > 0
        n_votes += label != 0
        np.minimum(best_level_unsigned, level.view(np.uint16), out=best_level_unsigned)
        if weight_sum is not None:
            # One extra 0 at the end: level -1 (a tie) indexes it, so ties add no weight.
            weight_of_level = np.append(_level_weights(ranking.n_levels, level_weight_alpha), 0.0)
            weight_sum += weight_of_level.take(level)

    decided = n_votes > 0
    if not keep_ties:
        pair_array = np.compress(decided, pair_array, axis=0)
        votes_for_a, n_votes, best_level = (np.compress(decided, array) for array in (votes_for_a, n_votes, best_level))
        weight_sum = None if weight_sum is None else np.compress(decided, weight_sum)
        batch_array = None if batch_array is None else np.compress(decided, batch_array)
    voters = np.maximum(n_votes, 1)  # ties: 0 / 1, fixed below
    target = (votes_for_a / voters).astype(np.float32)
    weight = (
        np.ones(n_votes.shape[0], dtype=np.float32) if weight_sum is None else (weight_sum / voters).astype(np.float32)
    )
    if keep_ties:
        tied = ~decided
        target[tied] = 0.5
        weight[tied] = 1.0
    return HeronLabels(
        pairs=pair_array,
        target=target,
        weight=weight,
        level=best_level,
        n_votes=n_votes,
        batch_ids=batch_array,
    )
