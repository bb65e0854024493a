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

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

# Single thread, set before numpy (and any BLAS it loads) is imported.
for _variable in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_variable] = "1"

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from trainer.core import heron  # noqa: E402

N_FACTORS = 4
SIGNS = np.array([1, -1, 1, -1])
FACTOR_STDS = np.array([1.0, 2.0, 3.0, 4.0])
SINGLE_LEVELS: list[list[int]] = [[0], [1], [2], [3]]
TIE_GROUP_LEVELS: list[list[int]] = [[0], [1, 2], [3]]


def reference_compare_loop(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    levels: Sequence[Sequence[int]],
    signs: Sequence[int] | np.ndarray,
    margins: Sequence[float] | np.ndarray,
    scales: Sequence[float] | np.ndarray | None = None,
    sigmas: Sequence[float] | np.ndarray | None = None,
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


@dataclass
class Timing:
    what: str
    n_pairs: int
    seconds: float  # median wall time
    cpu_share: float  # median CPU time / median wall time (1.0 = never preempted)

    @property
    def rate(self) -> float:
        return self.n_pairs / self.seconds


def measure(what: str, n_pairs: int, function: Callable[[], object], repeats: int) -> Timing:
    """Median wall time (``time.perf_counter``) of ``repeats`` calls, after one untimed warm-up.

    The CPU time of the same calls (``time.process_time``; the process is single-threaded) is kept
    as well: on a shared machine, a wall time well above the CPU time means the run was preempted,
    and the ``cpu share`` column of the report makes that visible.
    """
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        function()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    seconds = statistics.median(wall)
    return Timing(what, n_pairs, seconds, min(1.0, statistics.median(cpu) / seconds) if seconds > 0 else 1.0)


def make_problem(n_clips: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_clips, N_FACTORS)) * FACTOR_STDS
    pairs = heron.sample_pairs(n_clips, cap=n_pairs, rng=rng)
    return factors, pairs


def format_rate(pairs_per_second: float) -> str:
    return f"{pairs_per_second / 1e6:,.2f} M"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    timings: list[Timing] = []
    run: Callable[[], object]
    compare_timings: dict[str, Timing] = {}
    for name, extra in variants.items():
        _, level = heron.compare(a, b, signs=SIGNS, margins=deltas, **extra)
        histogram = np.bincount(level + 1, minlength=len(extra["levels"]) + 1) / n_pairs
        print(f"{name}: share tied {histogram[0]:.3f}, decided at levels 0.. {np.round(histogram[1:], 3).tolist()}")
        run = partial(heron.compare, a, b, signs=SIGNS, margins=deltas, **extra)
        compare_timings[name] = measure(f"`compare`, {name}", n_pairs, run, options.repeats)
        timings.append(compare_timings[name])

    # Worst case for the shrinking-index scheme: nothing decides, so every level touches every pair.
    run = partial(heron.compare, a, b, levels=SINGLE_LEVELS, signs=SIGNS, margins=deltas * 1e6)
    timings.append(measure("`compare`, 4 one-factor levels, worst case (all ties)", n_pairs, run, options.repeats))

    # The reference: a per-pair Python loop, on Python lists (its fastest form) and on numpy rows.
    n_loop = min(options.loop_pairs, n_pairs)
    loop_a, loop_b = a[:n_loop], b[:n_loop]
    list_a, list_b = loop_a.tolist(), loop_b.tolist()
    loop_timings: dict[str, Timing] = {}
    numpy_row_timings: dict[str, Timing] = {}
    for name, extra in variants.items():
        expected_label, expected_level = heron.compare(loop_a, loop_b, signs=SIGNS, margins=deltas, **extra)
        for form, rows_a, rows_b, to_sequence in (
            ("lists", list_a, list_b, np.ndarray.tolist),
            ("numpy rows", loop_a, loop_b, np.asarray),
        ):
            reference = partial(
                reference_compare_loop,
                rows_a,
                rows_b,
                extra["levels"],
                to_sequence(SIGNS),
                to_sequence(deltas),
                to_sequence(scales),
                to_sequence(sigmas),
            )
            if reference() != (expected_label.tolist(), expected_level.tolist()):
                raise SystemExit(f"the reference loop ({form}) and compare disagree on {name!r}")
            timing = measure(f"reference loop ({form}), {name}", n_loop, reference, options.loop_repeats)
            (loop_timings if form == "lists" else numpy_row_timings)[name] = timing
            timings.append(timing)

    # End to end: margins, difference columns, one comparator pass per ranking, targets, weights.
    single = [heron.Ranking.from_levels([0, 1, 2, 3])]
    three = [*single, heron.Ranking.from_levels([1, 0, 2, 3]), heron.Ranking.from_levels([0, (1, 2), 3])]
    for name, rankings in (("1 ranking", single), ("3 rankings (one with a tie group)", three)):
        run = partial(
            heron.label_pairs,
            factors,
            pairs,
            rankings=rankings,
            signs=SIGNS,
            sigmas=sigmas,
            level_weight_alpha=2.0,
        )
        timings.append(measure(f"`label_pairs`, {name}", n_pairs, run, options.repeats))

    rng = np.random.default_rng(options.seed)
    for n_clips in (632, 4_472, 100_000, 1_000_000):
        drawn = min(n_clips * (n_clips - 1) // 2, 200_000)
        what = "all pairs" if drawn < 200_000 else "200,000 distinct pairs"
        run = partial(heron.sample_pairs, n_clips, cap=200_000, rng=rng)
        timings.append(measure(f"`sample_pairs`, {n_clips:,} clips ({what})", drawn, run, options.repeats))
    n_batches = max(1, n_pairs // 120)
    run = partial(heron.batch_pairs, options.clips, n_batches=n_batches, rng=rng)
    timings.append(measure(f"`batch_pairs`, {n_batches:,} batches of 16", n_batches * 120, run, options.repeats))

    print("\n| what | pairs | median time | pairs/s | cpu share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for timing in timings:
        print(
            f"| {timing.what} | {timing.n_pairs:,} | {timing.seconds * 1e3:,.2f} ms"
            f" | {format_rate(timing.rate)} | {timing.cpu_share:.2f} |"
        )
    print("\n| comparator | vectorised `compare` | reference loop, lists | speed-up | loop, numpy rows | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in variants:
        vectorised, on_lists, on_rows = compare_timings[name], loop_timings[name], numpy_row_timings[name]
        print(
            f"| {name} | {format_rate(vectorised.rate)} | {format_rate(on_lists.rate)}"
            f" | {vectorised.rate / on_lists.rate:,.0f}x | {format_rate(on_rows.rate)}"
            f" | {vectorised.rate / on_rows.rate:,.0f}x |"
        )


if __name__ == "__main__":
    main()
