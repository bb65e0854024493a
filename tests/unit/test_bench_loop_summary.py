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


def _curve(scores_by_labels: dict[int, list[float]]) -> dict[int, dict]:
    return {
        it: {"labels": [labels] * len(scores), "scores": scores, "env_steps": 1000 * it}
        for it, (labels, scores) in enumerate(scores_by_labels.items(), start=1)
    }


def test_targets_hold_for_a_curve_that_reaches_the_ceiling_early():
    from bench.loop.summary import targets_markdown

    good = _curve({10: [-600.0, -400.0, -500.0], 20: [-150.0, -160.0, -170.0], 40: [-140.0, -150.0, -145.0]})
    text = targets_markdown({"pairwise": good})
    assert "non-decreasing in labels within the CIs: **holds**" in text
    assert "**holds** from 20 labels" in text


def test_targets_fail_when_more_labels_are_significantly_worse():
    from bench.loop.summary import targets_markdown

    worse = _curve({10: [-150.0, -160.0, -155.0], 20: [-400.0, -420.0, -410.0], 40: [-300.0, -260.0, -280.0]})
    text = targets_markdown(
        {"pairwise": worse, "heron": _curve({0: [-140.0, -150.0]}), "true": _curve({0: [-900.0, -950.0]})}
    )
    assert "**fails**: 10 → 20 labels" in text
    assert "**holds** from 10 labels" in text  # the early target holds; the drop after it fails the first
    assert "**no overlap**" in text


def test_anchor_evaluation_starts_where_the_platform_evaluates():
    """bench/loop/anchors.py evaluates outside the platform (imitation's virtualenv): the same reset seeds."""
    from bench.loop import anchors, curve
    from trainer.core.policy import evaluation

    rng = np.random.default_rng(curve.EVAL_SEED)
    assert anchors.SEED_BOUND == evaluation._SEED_BOUND
    assert anchors.evaluation_seeds(5) == [int(rng.integers(0, evaluation._SEED_BOUND)) for _ in range(5)]
    assert anchors.BUDGETS == [10_400, 16_000, 21_600, 27_200, 32_800]


def test_e2e_rows_are_set_beside_the_ceiling_at_the_same_simulated_steps():
    from bench.loop.summary import e2e_markdown

    def row(seed: int, score: float, wall: float) -> dict:
        return {
            "variant": "heron",
            "seed": seed,
            "final_timesteps": 8000,
            "iterations": [{}, {}],
            "wall_seconds": wall,
            "cpu_seconds": {"total": wall - 1},
            "final_fixed_eval_mean": score,
            "settings": {"initial_rollouts": 24, "loop": {"policy_timesteps": 4000}},
        }

    ceiling = {"true": {2: {"labels": [0, 0], "scores": [-144.0, -143.0], "env_steps": 16000}}}
    text = e2e_markdown([row(0, -142.0, 55.0), row(1, -146.0, 57.0), {"variant": "heron"}], ceiling)
    line = next(line for line in text.splitlines() if line.startswith("| HERON"))
    assert "| not recorded | one | 8000 | 2 | 16000 | 56.0 [57.0] | 55.0 [56.0] | — | -144.0 [" in line
    assert "| -143.5 [" in line and "0: -142 (55), 1: -146 (57)" in line
    assert e2e_markdown([{"variant": "heron"}], ceiling) == ""  # rows without the fixed-start evaluation are left out
    # Rows from another machine are a group of their own: the same code runs ~1.5x faster on one VM than another.
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_family_model": "6/167"}
    text = e2e_markdown([row(0, -142.0, 55.0), {**row(1, -146.0, 40.0), "machine": xeon}], ceiling)
    lines = [line for line in text.splitlines() if line.startswith("| HERON")]
    assert len(lines) == 2 and "| Intel Xeon Processor 6/167 | one | 8000 | 1 | 16000 | 40.0 [40.0] |" in lines[0]
