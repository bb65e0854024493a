"""Benchmark of the vectorised HERON comparator against the reference per-pair Python loop.

Run from the repository root, either way:

    .venv/bin/python -m bench.heron.bench_heron
    .venv/bin/python bench/heron/bench_heron.py [--pairs 1000000] [--repeats 7] [--loop-pairs 20000]

Everything runs on one thread: OMP/MKL/OPENBLAS (and numexpr/veclib) thread counts are pinned to 1
*before* numpy is imported. Timings are the median of several repeats of ``time.perf_counter``.
The data: a pool of clips with 4 normally distributed factor totals (std 1, 2, 3, 4), pairs
sampled from it with ``sample_pairs``, signs (+1, -1, +1, -1), sigma 0.5 for every factor (about
72% of pairs are decided at the first level, see the printed level histogram).
"""

from __future__ import annotations

import os

for _variable in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from trainer import heron  # noqa: E402

N_FACTORS = 4
SIGNS = np.array([1, -1, 1, -1])
FACTOR_STDS = np.array([1.0, 2.0, 3.0, 4.0])
SINGLE_LEVELS: list[list[int]] = [[0], [1], [2], [3]]
TIE_GROUP_LEVELS: list[list[int]] = [[0], [1, 2], [3]]


def reference_compare_loop(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    levels: Sequence[Sequence[int]],
    signs: Sequence[int],
    margins: Sequence[float],
    scales: Sequence[float] | None = None,
    sigmas: Sequence[float] | None = None,
) -> tuple[list[int], list[int]]:
    """The reference algorithm: for each pair, walk the levels in Python until one decides.

    One-factor level: ``d = s_k (a_k - b_k)`` against ``delta_k`` (strict). Tie group: the sum of
    ``s_k (a_k - b_k) / std_k`` over members with std_k > 0 against the mean of their sigmas.
    """
    labels: list[int] = []
    deciding_levels: list[int] = []
    for row_a, row_b in zip(a, b, strict=True):
        label, deciding = 0, -1
        for index, level in enumerate(levels):
            if len(level) == 1:
                k = level[0]
                d = signs[k] * (row_a[k] - row_b[k])
                threshold = margins[k]
            else:
                assert scales is not None and sigmas is not None
                d = 0.0
                for k in level:
                    if scales[k] > 0:
                        d += signs[k] * (row_a[k] - row_b[k]) / scales[k]
                threshold = sum(sigmas[k] for k in level) / len(level)
            if d > threshold:
                label, deciding = 1, index
                break
            if d < -threshold:
                label, deciding = -1, index
                break
        labels.append(label)
        deciding_levels.append(deciding)
    return labels, deciding_levels


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one untimed warm-up call."""
    function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def make_problem(n_clips: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_clips, N_FACTORS)) * FACTOR_STDS
    pairs = heron.sample_pairs(n_clips, cap=n_pairs, rng=rng)
    return factors, pairs


def format_rate(pairs_per_second: float) -> str:
    return f"{pairs_per_second / 1e6:,.2f} M/s" if pairs_per_second >= 1e5 else f"{pairs_per_second:,.0f} /s"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=1_000_000, help="pairs for the vectorised timings")
    parser.add_argument("--clips", type=int, default=20_000, help="clips in the pool")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per vectorised timing (median)")
    parser.add_argument("--loop-pairs", type=int, default=20_000, help="pairs for the Python-loop timing")
    parser.add_argument("--loop-repeats", type=int, default=3, help="repeats of the Python-loop timing")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    factors, pairs = make_problem(options.clips, options.pairs, options.seed)
    n_pairs = pairs.shape[0]
    sigmas = np.full(N_FACTORS, 0.5)
    scales = factors.std(axis=0, ddof=1)
    deltas = heron.margins(factors, sigmas)
    a, b = factors[pairs[:, 0]], factors[pairs[:, 1]]
    rows: list[tuple[str, str, float, float | None]] = []  # what, size, seconds, rate

    print(f"# HERON comparator benchmark ({platform.python_version()}, numpy {np.__version__}, 1 thread)")
    print(f"pool {options.clips:,} clips x {N_FACTORS} factors, {n_pairs:,} pairs, sigma 0.5\n")

    variants: dict[str, dict[str, Any]] = {
        "4 one-factor levels": {"levels": SINGLE_LEVELS},
        "levels [0], (1, 2), [3] (tie group)": {
            "levels": TIE_GROUP_LEVELS,
            "scales": scales,
            "sigmas": sigmas,
        },
    }
    vector_rates: dict[str, float] = {}
    for name, extra in variants.items():
        _, level = heron.compare(a, b, signs=SIGNS, margins=deltas, **extra)
        histogram = np.bincount(level + 1, minlength=len(extra["levels"]) + 1) / n_pairs
        print(
            f"{name}: share tied {histogram[0]:.3f},"
            f" decided at levels 0.. {np.round(histogram[1:], 3).tolist()}"
        )
        seconds = median_seconds(
            lambda extra=extra: heron.compare(a, b, signs=SIGNS, margins=deltas, **extra),
            options.repeats,
        )
        vector_rates[name] = n_pairs / seconds
        rows.append((f"`compare`, {name}", f"{n_pairs:,} pairs", seconds, n_pairs / seconds))

    # Worst case for the shrinking-index scheme: nothing decides, every level touches every pair.
    huge = deltas * 1e6
    seconds = median_seconds(
        lambda: heron.compare(a, b, levels=SINGLE_LEVELS, signs=SIGNS, margins=huge), options.repeats
    )
    rows.append(
        ("`compare`, 4 levels, worst case (all ties)", f"{n_pairs:,} pairs", seconds, n_pairs / seconds)
    )

    # The reference: per-pair Python loop, on Python lists (its fastest form) and on numpy rows.
    n_loop = min(options.loop_pairs, n_pairs)
    loop_a, loop_b = a[:n_loop], b[:n_loop]
    lists = (loop_a.tolist(), loop_b.tolist())
    loop_rates: dict[str, float] = {}
    for name, extra in variants.items():
        levels = extra["levels"]
        loop_arguments = {
            "levels": levels,
            "signs": SIGNS.tolist(),
            "margins": deltas.tolist(),
            "scales": scales.tolist(),
            "sigmas": sigmas.tolist(),
        }
        expected = heron.compare(loop_a, loop_b, signs=SIGNS, margins=deltas, **extra)
        got = reference_compare_loop(*lists, **loop_arguments)
        if got[0] != expected[0].tolist() or got[1] != expected[1].tolist():
            raise SystemExit(f"reference loop and compare disagree on {name!r}")
        seconds = median_seconds(
            lambda arguments=loop_arguments: reference_compare_loop(*lists, **arguments),
            options.loop_repeats,
        )
        loop_rates[name] = n_loop / seconds
        rows.append((f"reference loop (lists), {name}", f"{n_loop:,} pairs", seconds, n_loop / seconds))
    seconds = median_seconds(
        lambda: reference_compare_loop(
            loop_a,
            loop_b,
            SINGLE_LEVELS,
            SIGNS,
            deltas,
        ),
        options.loop_repeats,
    )
    rows.append(
        ("reference loop (numpy rows), 4 one-factor levels", f"{n_loop:,} pairs", seconds, n_loop / seconds)
    )

    # End to end: margins, difference columns, one comparator pass per ranking, targets.
    single = [heron.Ranking.from_levels([0, 1, 2, 3])]
    three = [*single, heron.Ranking.from_levels([1, 0, 2, 3]), heron.Ranking.from_levels([0, (1, 2), 3])]
    for name, rankings in (("1 ranking", single), ("3 rankings", three)):
        seconds = median_seconds(
            lambda rankings=rankings: heron.label_pairs(
                factors, pairs, rankings=rankings, signs=SIGNS, sigmas=sigmas, level_weight_alpha=2.0
            ),
            options.repeats,
        )
        rows.append((f"`label_pairs`, {name}", f"{n_pairs:,} pairs", seconds, n_pairs / seconds))

    rng = np.random.default_rng(options.seed)
    for n_clips in (632, 10_000, 1_000_000):
        total = n_clips * (n_clips - 1) // 2
        seconds = median_seconds(
            lambda n_clips=n_clips: heron.sample_pairs(n_clips, rng=rng), options.repeats
        )
        drawn = min(total, 200_000)
        what = "all pairs" if total <= 200_000 else "cap 200,000 distinct"
        rows.append(
            (f"`sample_pairs`, {n_clips:,} clips ({what})", f"{drawn:,} pairs", seconds, drawn / seconds)
        )
    n_batches = max(1, n_pairs // 120)
    seconds = median_seconds(
        lambda: heron.batch_pairs(options.clips, n_batches=n_batches, rng=rng), options.repeats
    )
    rows.append(
        (
            f"`batch_pairs`, {n_batches:,} batches of 16",
            f"{n_batches * 120:,} pairs",
            seconds,
            n_batches * 120 / seconds,
        )
    )

    print("\n| what | size | median time | rate |")
    print("| --- | --- | ---: | ---: |")
    for what, size, seconds, rate in rows:
        shown_rate = format_rate(rate) if rate is not None else ""
        print(f"| {what} | {size} | {seconds * 1e3:,.2f} ms | {shown_rate} |")
    print("\n| comparator | vectorised | reference loop (lists) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name in variants:
        print(
            f"| {name} | {format_rate(vector_rates[name])} | {format_rate(loop_rates[name])} |"
            f" {vector_rates[name] / loop_rates[name]:,.0f}x |"
        )


if __name__ == "__main__":
    main()
