"""Why do a few more labels sometimes give a worse policy? Reward-model quality against the number of labels.

Issue 13, point 3 (the measurements behind bench/README.md's "Label efficiency" section). No SAC here: the
policy can only be as good as the reward it climbs, so this measures the reward model the loop's first iteration
would train, over many seeds and cheaply:

- the initial clip pool of the loop (a ``generate_clips`` run: 24 rollouts of random play and the scripted
  swing-up at four noise levels → 96 clips of 50 steps), made through the platform in-process (SQLite);
- N random pairs of pool clips labelled by the rational oracle (the clip with the higher true return wins);
- the reward model trained exactly as ``trainer.reward_training.reward_model_train`` trains it (clip hold-out for
  the Spearman metric, validation split, early stopping, bootstrap ensemble) — or with one of the variants below;
- measured on every clip and every step of the pool: Spearman of learned vs true return per clip, Spearman of the
  learned vs true reward per *step* (what SAC actually climbs), and the true return of the clip the model likes
  best (what a policy exploiting it would aim for; the pool's best is about −0.5).

    .venv/bin/python -m bench.loop.investigate --labels 10 20 40 80 160 --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.loop import curve

FIXED_MIN_UPDATES = 500
VARIANTS = ("product", "pool-stats", "no-holdout", "no-holdout-no-val", "fixed", "before", "overrides")
# "before": the product's reward config before the issue-13 schedule (validation split of 10 % at any size, early
# stopping with patience 5, at most 60 epochs), with the human-labelled clips never held out (as now).
BEFORE = {"updates_per_pair": 0.0, "min_val_pairs": 0, "weight_decay": 0.0}
# "overrides": the product's config merged with --overrides (a JSON object), to try schedules.
OVERRIDES: dict[str, Any] = {}
SELECTION = {"hard": False}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    theta, speed, torque = np.meshgrid(np.linspace(-np.pi, np.pi, 41), np.linspace(-8, 8, 41), np.linspace(-2, 2, 5))
    features = np.stack([np.cos(theta), np.sin(theta), speed, torque], axis=-1).reshape(-1, 4).astype(np.float32)
    true = -(theta**2 + 0.1 * speed**2 + 0.001 * torque**2).reshape(-1)
    return features, true


GRID_FEATURES, GRID_TRUE = _grid()


def _pool(seed: int):
    from labeling.models import Clip
    from trainer import loop
    from trainer.models import RunKind
    from trainer.reward_training import clip_features

    researcher, project = curve._project("investigate", seed, {"steps_per_iteration": 1})
    run = loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        created_by=researcher,
        params={"rollouts": curve.INITIAL_ROLLOUTS, "queries": 0, "seed": seed, "render": "none"},
    )
    curve.drive(run.pk)
    clips = list(Clip.objects.filter(project=project).select_related("rollout").order_by("id"))
    features, true_returns, _ = clip_features(clips)
    from trainer.management.commands.simulate_annotators import TrueRewards

    rewards = TrueRewards()
    step_rewards = np.stack([rewards.for_clip(c.pk) for c in clips])
    return features, true_returns, step_rewards


def _train(variant: str, features, pairs, targets, seed: int):
    from trainer.core.loop_settings import DEFAULT_REWARD_CONFIG
    from trainer.core.reward import PreferenceDataset, train_reward_model
    from trainer.core.reward.holdout import holdout_mask
    from trainer.reward_training import resolve_reward_config

    config = resolve_reward_config({**DEFAULT_REWARD_CONFIG, "seed": seed})
    n = len(features)
    holdout = np.zeros(n, dtype=bool)
    if variant in ("product", "pool-stats"):
        # reward_model_train holds out 10 % of the labelled clips (and every pair touching them) for a metric.
        ids = np.unique(pairs)
        holdout[ids[holdout_mask(len(ids), 0.1, np.random.default_rng(seed))]] = True
    if variant == "before":
        config = config.merged(BEFORE)
    if variant == "overrides":
        config = config.merged(OVERRIDES)
    if variant == "no-holdout-no-val":
        config = config.merged({"val_fraction": 0.0})
    if variant == "fixed":  # the product after issue 13: human-labelled clips never held out, ≥ 500 updates
        config = config.merged({"min_updates": FIXED_MIN_UPDATES})
    keep = ~(holdout[pairs[:, 0]] | holdout[pairs[:, 1]])
    dataset = PreferenceDataset(
        clip_features=features, pairs=pairs[keep], targets=targets[keep], weights=np.ones(int(keep.sum()))
    )
    stats_clips = np.arange(n) if variant == "pool-stats" else None
    result = train_reward_model(dataset, config, stats_clips=stats_clips)
    return result, int(keep.sum())


def measure(variant: str, n_labels: int, seed: int, pool) -> dict[str, Any]:
    from scipy import stats

    features, true_returns, step_rewards = pool
    rng = np.random.default_rng([seed, n_labels, 5])
    n = len(features)
    chosen = set()
    while len(chosen) < n_labels:
        a, b = sorted(int(x) for x in rng.choice(n, size=2, replace=False))
        if SELECTION["hard"] and len(chosen) >= 10:
            # Like the loop's active questions after the first 10: the closest-return pair of 8 random candidates.
            candidates = [sorted(int(x) for x in rng.choice(n, size=2, replace=False)) for _ in range(8)]
            a, b = min(candidates, key=lambda p: abs(true_returns[p[0]] - true_returns[p[1]]))
        chosen.add((a, b))
    pairs = np.array(sorted(chosen))
    targets = (true_returns[pairs[:, 0]] > true_returns[pairs[:, 1]]).astype(np.float32)
    result, used = _train(variant, features, pairs, targets, seed)
    model = result.model
    learned = model.predict_returns(features)
    step = model.reward(features.reshape(-1, features.shape[-1]))
    best = int(np.argmax(learned))
    members = model.predict_member_returns(features)
    # What a greedy policy would seek: the learned reward over a grid of Pendulum states and torques.
    grid_learned = model.reward(GRID_FEATURES)
    upright = float(model.reward(np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32))[0])
    return {
        "variant": variant,
        "overrides": OVERRIDES if variant == "overrides" else None,
        "labels": n_labels,
        "hard_pairs": SELECTION["hard"],
        "seed": seed,
        "pairs_trained": used,
        "epochs": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "clip_spearman": float(stats.spearmanr(learned, true_returns).statistic),
        "member_min_spearman": min(float(stats.spearmanr(m, true_returns).statistic) for m in members),
        "step_spearman": float(stats.spearmanr(step, step_rewards.reshape(-1)).statistic),
        "liked_best_true_return": float(true_returns[best]),
        "grid_step_spearman": float(stats.spearmanr(grid_learned, GRID_TRUE).statistic),
        "grid_argmax_true_reward": float(GRID_TRUE[int(np.argmax(grid_learned))]),
        "grid_above_upright": float(np.mean(grid_learned > upright)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 20, 40, 80, 160])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", default=str(curve.ROOT / "var" / "bench-loop-investigate.jsonl"))
    parser.add_argument("--overrides", default="{}", help="JSON RewardModelConfig overrides for variant 'overrides'")
    parser.add_argument(
        "--hard-pairs", action="store_true", help="after 10 random pairs, pick near-equal pairs (as active queries do)"
    )
    args = parser.parse_args()
    OVERRIDES.update(json.loads(args.overrides))
    SELECTION["hard"] = args.hard_pairs
    curve._setup(f"sqlite:///{curve.ROOT / 'var' / 'bench-loop-investigate.sqlite3'}")
    started = time.monotonic()
    with open(args.out, "a") as handle:
        for seed in args.seeds:
            pool = _pool(seed)
            for n_labels in args.labels:
                for variant in args.variants:
                    row = measure(variant, n_labels, seed, pool)
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    print(row, flush=True)
    print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
