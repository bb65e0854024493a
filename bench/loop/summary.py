"""Summarise bench/loop/curve results: IQM and mean with stratified-bootstrap 95 % CIs, per-seed values, plots.

    .venv/bin/python -m bench.loop.summary [--results bench/loop/results/curve.jsonl] [--out bench/loop]

Writes ``summary.md`` (the budget table and one table per variant) and ``return_vs_steps.png`` /
``return_vs_labels.png`` into ``--out``.

Statistics follow rliable (Agarwal et al., 2021): a seed's score is the mean true return of its 50 evaluation
episodes; the aggregate over seeds is the interquartile mean (IQM, the mean of the middle 50 %) and the plain
mean, each with a percentile 95 % CI from a *stratified* bootstrap (seeds resampled with replacement within each
task; one task here, Pendulum-v1). The ``rliable`` package itself is not used: rliable 1.2.0 needs
``arch < 8``, and arch 7.x does not import with the pandas 3 this project pins (``deprecate_kwarg`` changed), so
the same estimator is implemented below with numpy/scipy (``scipy.stats.trim_mean(x, 0.25)`` is rliable's IQM).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_REPS = 20_000
ORDER = ("true", "heron", "pairwise", "pairwise-noisy", "pairwise-mistake", "pairwise-equal")
LABELS = {
    "true": "true reward (ceiling)",
    "heron": "HERON, one ranking",
    "pairwise": "pairwise, oracle",
    "pairwise-noisy": "pairwise, Noisy (β = 1)",
    "pairwise-mistake": "pairwise, Mistake (ε = 0.1)",
    "pairwise-equal": "pairwise, Equal",
}


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(values, 0.25, axis=axis)


def stratified_bootstrap_ci(
    scores_by_task: list[np.ndarray],
    aggregate: Callable[[np.ndarray], np.ndarray],
    *,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile 95 % CI of ``aggregate`` over all runs, resampling runs within each task.

    ``aggregate`` maps (reps, n_runs) to (reps,); it is applied to the concatenation of the tasks' resampled runs,
    as rliable's ``get_interval_estimates`` does with its stratified bootstrap."""
    rng = np.random.default_rng(seed)
    point = float(aggregate(np.concatenate(scores_by_task)[None, :])[0])
    samples = []
    for scores in scores_by_task:
        n = len(scores)
        samples.append(scores[rng.integers(0, n, size=(reps, n))])
    values = aggregate(np.concatenate(samples, axis=1))
    low, high = np.percentile(values, [2.5, 97.5])
    return point, float(low), float(high)


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """variant → iteration → {labels, env_steps, scores (per seed), seeds, …}."""
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: (r["variant"], r["seed"])):
        for it in row["iterations"]:
            cell = out[row["variant"]].setdefault(
                it["iteration"],
                {
                    "labels": [],
                    "env_steps": it["env_steps"],
                    "by_kind": it["env_steps_by_kind"],
                    "scores": [],
                    "seeds": [],
                    "evaluation_steps": it["evaluation_steps"],
                    "pool_spearman": [],
                },
            )
            cell["labels"].append(it["labels"])
            cell["scores"].append(it["true_mean"])
            cell["seeds"].append(row["seed"])
            if it.get("pool_spearman") is not None:
                cell["pool_spearman"].append(it["pool_spearman"])
    return out


def _estimates(scores: list[float]) -> dict[str, tuple[float, float, float]]:
    array = np.asarray(scores, dtype=np.float64)
    return {
        "iqm": stratified_bootstrap_ci([array], lambda x: iqm(x, axis=1)),
        "mean": stratified_bootstrap_ci([array], lambda x: x.mean(axis=1)),
    }


def _fmt(estimate: tuple[float, float, float], n: int) -> str:
    point, low, high = estimate
    return f"{point:.1f} [{low:.1f}, {high:.1f}]" if n >= 2 else f"{point:.1f} (one seed: no CI)"


def markdown(data: dict[str, dict[int, dict[str, Any]]]) -> str:
    lines = ["### Environment-step budget (identical for every variant)", ""]
    any_variant = next(iter(data.values()))
    lines += [
        "| after iteration | cumulative labels (pairwise) | initial pool | SAC training | rollouts | "
        "**simulated steps** | evaluation (separate) |",
        "|---|---|---|---|---|---|---|",
    ]
    labels_of = {it: cell["labels"][0] for it, cell in data.get("pairwise", {}).items()}
    for it, cell in sorted(any_variant.items()):
        kinds = cell["by_kind"]
        lines.append(
            f"| {it} | {labels_of.get(it, '—')} | {kinds['initial_pool']} | {kinds['policy_training']} | "
            f"{kinds['rollouts']} | **{cell['env_steps']}** | {cell['evaluation_steps']} per policy |"
        )
    for variant in [v for v in ORDER if v in data]:
        lines += ["", f"### {LABELS[variant]}", ""]
        lines += [
            "| iteration | labels | simulated steps | seeds | IQM [95 % CI] | mean [95 % CI] | reward Spearman "
            "(pool, median) | per seed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for it, cell in sorted(data[variant].items()):
            est = _estimates(cell["scores"])
            n = len(cell["scores"])
            labels = sorted(set(cell["labels"]))
            spearman = f"{np.median(cell['pool_spearman']):.3f}" if cell["pool_spearman"] else "—"
            per_seed = ", ".join(f"{s}: {v:.0f}" for s, v in zip(cell["seeds"], cell["scores"], strict=True))
            lines.append(
                f"| {it} | {'/'.join(map(str, labels))} | {cell['env_steps']} | {len(cell['scores'])} | "
                f"{_fmt(est['iqm'], n)} | {_fmt(est['mean'], n)} | {spearman} | {per_seed} |"
            )
    return "\n".join(lines) + "\n"


def plots(data: dict[str, dict[int, dict[str, Any]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for x_key, name, variants in (
        ("env_steps", "return_vs_steps.png", [v for v in ORDER if v in data]),
        ("labels", "return_vs_labels.png", [v for v in ORDER if v in data and v.startswith("pairwise")]),
    ):
        if not variants:
            continue
        figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
        for variant in variants:
            cells = [cell for _, cell in sorted(data[variant].items())]
            xs = [cell["env_steps"] if x_key == "env_steps" else float(np.median(cell["labels"])) for cell in cells]
            est = [_estimates(cell["scores"])["iqm"] for cell in cells]
            axis.plot(xs, [e[0] for e in est], marker="o", label=f"{LABELS[variant]} (n={len(cells[0]['scores'])})")
            axis.fill_between(xs, [e[1] for e in est], [e[2] for e in est], alpha=0.2)
        if x_key == "labels" and "true" in data:
            ceiling = _estimates(data["true"][max(data["true"])]["scores"])["iqm"]
            axis.axhspan(ceiling[1], ceiling[2], color="grey", alpha=0.15, label="true reward, final (IQM CI)")
            axis.set_xscale("log", base=2)
        axis.axhline(-200, color="black", linewidth=0.8, linestyle="--")
        axis.set_xlabel("simulated environment steps" if x_key == "env_steps" else "cumulative pairwise labels")
        axis.set_ylabel("true return (IQM over seeds, 95 % CI)")
        axis.set_title("Pendulum-v1, 50 fixed evaluation episodes per policy")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = out / name
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", type=Path, nargs="+", default=[ROOT / "bench" / "loop" / "results" / "curve.jsonl"]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "loop")
    args = parser.parse_args()
    rows = [row for path in args.results for row in load(path)]
    # One configuration (schedule, episodes, reward overrides) per summary: the one most seeds were run with.
    keys = [json.dumps(row["config"], sort_keys=True) for row in rows]
    chosen = max(set(keys), key=keys.count)
    rows = [row for row, key in zip(rows, keys, strict=True) if key == chosen]
    print(f"configuration: {chosen} ({len(rows)} runs)")
    data = curves(rows)
    text = markdown(data)
    (args.out / "summary.md").write_text(text)
    print(text)
    for path in plots(data, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
