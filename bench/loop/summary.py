"""Summarise bench/loop/curve results: IQM and mean with stratified-bootstrap 95 % CIs, per-seed values, plots.

    .venv/bin/python -m bench.loop.summary [--results bench/loop/results/curve.jsonl] [--out bench/loop]

Writes ``summary.md`` (the budget table, one table per variant, the anchors measured beside them by
``bench/loop/anchors.py``, the cost per seed, and the issue-13 targets checked against the CIs) and
``return_vs_steps.png`` / ``return_vs_labels.png`` into ``--out``.

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


def anchors_markdown(anchors: list[dict[str, Any]]) -> str:
    """The anchors' tables: SB3 SAC at the curve's budgets, imitation's tutorial as it runs."""
    if not anchors:
        return ""
    lines = ["", "### Anchors, same evaluation (`bench/loop/anchors.py`, imitation's virtualenv)", ""]
    sac = [row for row in anchors if row["anchor"] == "sb3-sac"]
    if sac:
        lines += [
            "Plain Stable-Baselines3 2.2.1 SAC on the true reward with the platform's SAC hyper-parameters, "
            "evaluated when its own environment steps reach each budget:",
            "",
            "| simulated steps | seeds | IQM [95 % CI] | mean [95 % CI] | per seed |",
            "|---|---|---|---|---|",
        ]
        by_steps: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for row in sorted(sac, key=lambda r: r["seed"]):
            for it in row["iterations"]:
                by_steps[it["env_steps"]].append((row["seed"], it["true_mean"]))
        for steps, values in sorted(by_steps.items()):
            scores = [v for _, v in values]
            est = _estimates(scores)
            per_seed = ", ".join(f"{seed}: {v:.0f}" for seed, v in values)
            lines.append(
                f"| {steps} | {len(scores)} | {_fmt(est['iqm'], len(scores))} | {_fmt(est['mean'], len(scores))} | "
                f"{per_seed} |"
            )
    tutorial = [row for row in anchors if row["anchor"] == "imitation-tutorial"]
    if tutorial:
        scores = [row["iterations"][-1]["true_mean"] for row in tutorial]
        est = _estimates(scores)
        lines += [
            "",
            "imitation 1.0.1's preference-comparisons tutorial on Pendulum-v1 as documented (PPO, 200 synthetic "
            "comparisons, 5 000 nominal steps + 1 000 for a fresh PPO on the learned reward; 8 environments):",
            "",
            "| seeds | counted simulated steps (median) | IQM [95 % CI] | mean [95 % CI] | wall s / CPU-s per seed "
            "(median) |",
            "|---|---|---|---|---|",
            f"| {len(scores)} | {int(np.median([row['env_steps'] for row in tutorial]))} | "
            f"{_fmt(est['iqm'], len(scores))} | {_fmt(est['mean'], len(scores))} | "
            f"{np.median([row['wall_seconds'] for row in tutorial]):.1f} / "
            f"{np.median([row['cpu_seconds'] for row in tutorial]):.1f} |",
        ]
    return "\n".join(lines) + "\n"


def cost_markdown(rows: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> str:
    """Wall and CPU seconds per seed (whole curve, evaluation included), beside the anchors'."""
    lines = [
        "",
        "### Cost per seed (whole curve: 5 iterations and 5 × 50 evaluation episodes)",
        "",
        "| run | seeds | wall s per seed, median [min, max] | CPU-s per seed, median [min, max] |",
        "|---|---|---|---|",
    ]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[LABELS[row["variant"]]].append(row)
    for row in anchors:
        groups[
            {"sb3-sac": "SB3 SAC (anchor)", "imitation-tutorial": "imitation tutorial (anchor)"}[row["anchor"]]
        ].append(row)
    for name, runs in groups.items():
        wall = [row["wall_seconds"] for row in runs]
        cpu = [row["cpu_seconds"] for row in runs]
        lines.append(
            f"| {name} | {len(runs)} | {np.median(wall):.0f} [{min(wall):.0f}, {max(wall):.0f}] | "
            f"{np.median(cpu):.0f} [{min(cpu):.0f}, {max(cpu):.0f}] |"
        )
    return "\n".join(lines) + "\n"


def machine_label(row: dict[str, Any]) -> str:
    """The CPU a row ran on, short ("Intel Xeon Processor 6/167"); rows before bench/machine.py did not say."""
    machine = row.get("machine")
    if not machine:
        return "not recorded"
    name = " ".join(machine.get("cpu", "?").replace("(R)", "").replace("(TM)", "").split())
    return f"{name} {machine.get('cpu_family_model', '')}".strip()


def e2e_markdown(rows: list[dict[str, Any]], data: dict[str, dict[int, dict[str, Any]]]) -> str:
    """``bench/loop/run.py --eval-episodes`` rows (end to end through Celery, PostgreSQL and HTTP): wall and CPU per
    seed against the 60 s target, and the return on the curve's fixed starts beside the curve's ceiling at the same
    simulated steps (issue 13, point 5)."""
    rows = [row for row in rows if row.get("final_fixed_eval_mean") is not None]
    if not rows:
        return ""
    lines = [
        "",
        "### End to end through the servers (`bench/loop/run.py`, issue 13 point 5)",
        "",
        "| variant | machine | workers | SAC steps | seeds | simulated steps | wall s per seed, median [max] "
        "| CPU-s per seed, median [max] | render queue drained, wall s median | return on the 50 fixed starts, "
        "mean [95 % CI] | curve's ceiling at those steps | per seed (return, wall s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        # Rows from before bench/loop/run.py's --workers ran one worker on every queue.
        workers = row.get("settings", {}).get("workers", "one")
        key = (row["variant"], machine_label(row), workers, int(row["final_timesteps"]), len(row["iterations"]))
        groups[key].append(row)
    for (variant, machine, workers, timesteps, n_iterations), runs in sorted(groups.items()):
        runs.sort(key=lambda row: row["seed"])
        wall = [row["wall_seconds"] for row in runs]
        cpu = [row["cpu_seconds"]["total"] for row in runs]
        scores = [row["final_fixed_eval_mean"] for row in runs]
        rollouts = int(runs[0]["settings"]["loop"].get("rollouts", 8))
        steps = runs[0]["settings"]["initial_rollouts"] * 200 + timesteps + n_iterations * rollouts * 200
        ceiling = next((c for c in data.get("true", {}).values() if c["env_steps"] == steps), None)
        ceiling_text = _fmt(_estimates(ceiling["scores"])["mean"], len(ceiling["scores"])) if ceiling else "—"
        drained = [row["drained"]["wall_seconds"] for row in runs if "drained" in row]
        drained_text = f"{np.median(drained):.1f}" if drained else "—"
        lines.append(
            f"| {LABELS.get(variant, variant)} | {machine} | {workers} | {timesteps} | {len(runs)} | {steps} "
            f"| {np.median(wall):.1f} [{max(wall):.1f}] | {np.median(cpu):.1f} [{max(cpu):.1f}] | {drained_text} | "
            f"{_fmt(_estimates(scores)['mean'], len(scores))} | {ceiling_text} | "
            + ", ".join(f"{r['seed']}: {r['final_fixed_eval_mean']:.0f} ({r['wall_seconds']:.0f})" for r in runs)
            + " |"
        )
    return "\n".join(lines) + "\n"


def targets_markdown(data: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Issue 13's point-3 targets, checked on the mean's 95 % CIs (needs ≥ 2 seeds per cell)."""
    lines = ["", "### Targets (issue 13, point 3), checked on the mean and its 95 % CI", ""]
    pairwise = data.get("pairwise")
    if pairwise and min(len(cell["scores"]) for cell in pairwise.values()) >= 2:
        cells = [
            (int(np.median(cell["labels"])), _estimates(cell["scores"])["mean"]) for _, cell in sorted(pairwise.items())
        ]
        # Non-decreasing within the CIs: no later label count lies significantly below an earlier one.
        drops = [
            f"{a} → {b} labels ({ea[1]:.1f}..{ea[2]:.1f} vs {eb[1]:.1f}..{eb[2]:.1f})"
            for i, (a, ea) in enumerate(cells)
            for b, eb in cells[i + 1 :]
            if eb[2] < ea[1]
        ]
        lines.append(
            "- pairwise true return non-decreasing in labels within the CIs: "
            + ("**holds**" if not drops else "**fails**: " + "; ".join(drops))
        )
        reached = [(labels, e) for labels, e in cells if labels <= 40 and e[0] >= -200 and e[1] > -250]
        lines.append(
            "- mean ≥ −200 with ≤ 40 labels and lower CI bound > −250: "
            + (
                f"**holds** from {reached[0][0]} labels (mean {reached[0][1][0]:.1f}, CI lower {reached[0][1][1]:.1f})"
                if reached
                else "**fails** ("
                + ", ".join(f"{labels}: {e[0]:.1f} [{e[1]:.1f}, {e[2]:.1f}]" for labels, e in cells if labels <= 40)
                + ")"
            )
        )
    if "heron" in data and "true" in data:
        overlaps = []
        for it, cell in sorted(data["heron"].items()):
            if it in data["true"] and len(cell["scores"]) >= 2 and len(data["true"][it]["scores"]) >= 2:
                h, t = _estimates(cell["scores"])["mean"], _estimates(data["true"][it]["scores"])["mean"]
                overlap = h[1] <= t[2] and t[1] <= h[2]
                overlaps.append(
                    f"{cell['env_steps']} steps: HERON {h[0]:.1f} [{h[1]:.1f}, {h[2]:.1f}] vs true {t[0]:.1f} "
                    f"[{t[1]:.1f}, {t[2]:.1f}] → {'overlap' if overlap else '**no overlap**'}"
                )
        if overlaps:
            lines.append("- HERON's CI overlaps the true-reward ceiling's at equal steps: " + "; ".join(overlaps))
    return "\n".join(lines) + "\n"


def plots(
    data: dict[str, dict[int, dict[str, Any]]], out: Path, anchors: list[dict[str, Any]] | None = None
) -> list[Path]:
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
        sac = [row for row in anchors or [] if row["anchor"] == "sb3-sac"]
        if x_key == "env_steps" and sac:
            by_steps: dict[int, list[float]] = defaultdict(list)
            for row in sac:
                for it in row["iterations"]:
                    by_steps[int(it["env_steps"])].append(it["true_mean"])
            sac_xs = sorted(by_steps)
            est = [_estimates(by_steps[x])["iqm"] for x in sac_xs]
            axis.plot(sac_xs, [e[0] for e in est], linestyle="--", marker="x", color="grey",
                      label=f"SB3 SAC, true reward (anchor, n={len(sac)})")  # fmt: skip
            axis.fill_between(sac_xs, [e[1] for e in est], [e[2] for e in est], color="grey", alpha=0.1)
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
    parser.add_argument("--anchors", type=Path, default=ROOT / "bench" / "loop" / "results" / "anchors.jsonl")
    parser.add_argument("--e2e", type=Path, default=ROOT / "bench" / "loop" / "results" / "e2e.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "loop")
    args = parser.parse_args()
    anchors = load(args.anchors) if args.anchors.exists() else []
    rows = [row for path in args.results for row in load(path)]
    # One configuration (schedule, episodes, reward overrides) per summary: the one most seeds were run with.
    keys = [json.dumps(row["config"], sort_keys=True) for row in rows]
    chosen = max(set(keys), key=keys.count)
    rows = [row for row, key in zip(rows, keys, strict=True) if key == chosen]
    print(f"configuration: {chosen} ({len(rows)} runs)")
    data = curves(rows)
    e2e = load(args.e2e) if args.e2e.exists() else []
    text = (
        markdown(data)
        + anchors_markdown(anchors)
        + cost_markdown(rows, anchors)
        + e2e_markdown(e2e, data)
        + targets_markdown(data)
    )
    (args.out / "summary.md").write_text(text)
    print(text)
    for path in plots(data, args.out, anchors):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
