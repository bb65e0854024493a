"""bench/loop/summary.py's statistics (issue 13): rliable's IQM and stratified bootstrap, re-implemented."""

from __future__ import annotations

import numpy as np

from bench.loop.summary import iqm, stratified_bootstrap_ci


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1.0, 9.0)) == 4.5  # middle of 1..8: 3, 4, 5, 6
    assert iqm(np.array([-1000.0, -150.0, -140.0, -130.0])) == -145.0  # one collapsed seed barely moves it


def test_stratified_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    scores = np.random.default_rng(0).normal(-150.0, 30.0, size=10)
    point, low, high = stratified_bootstrap_ci([scores], lambda x: x.mean(axis=1), reps=2000)
    assert low < point < high and point == scores.mean()
    assert stratified_bootstrap_ci([scores], lambda x: x.mean(axis=1), reps=2000) == (point, low, high)
    # Resampling stays within each task: a constant task contributes no spread.
    constant = stratified_bootstrap_ci([np.full(5, -100.0)], lambda x: x.mean(axis=1), reps=500)
    assert constant == (-100.0, -100.0, -100.0)
