"""A finished loop iteration's metrics, sent to TensorBoard (and MLflow when configured).

Called after an iteration is done (``trainer.receivers.on_run_state_changed``, after commit): it reads the
iteration's rows (reward model, policy checkpoint, step results) and hands flat ``group/name`` scalars to
``trainer.core.tracking``. Tracking is a side channel: a failure is logged and never fails the run.

Settings: ``TRACKING_DIR`` (a local directory; empty turns TensorBoard files off) and
``MLFLOW_TRACKING_URI`` (empty: MLflow off).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from .core import tracking
from .models import PolicyCheckpoint, Run, RunState

logger = logging.getLogger(__name__)

_REWARD_KEYS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "initial_val_loss",
    "initial_val_accuracy",
    "epochs_run",
    "best_epoch",
    "spearman",
    "pearson",
    "holdout_spearman",
    "holdout_accuracy",
    "n_pairs",
    "wall_time_s",
)
_POLICY_KEYS = ("true_mean", "true_std", "learned_mean", "learned_std")


def iteration_metrics(run: Run) -> dict[str, float]:
    """The iteration's scalars: reward-model losses, accuracies and correlations (``reward/``), the policy's
    true and learned returns (``policy/``), label and pair counts (``labels/``), and each step's wall, CPU and
    queue seconds (``time/``). Missing values (no reward model when training on the true reward, no learned
    return) are left out."""
    metrics: dict[str, Any] = {}
    if run.reward_model is not None:
        reward_metrics = run.reward_model.metrics or {}
        metrics.update({f"reward/{key}": reward_metrics.get(key) for key in _REWARD_KEYS})
    policy = PolicyCheckpoint.objects.filter(run=run).first()
    if policy is not None:
        evaluation = policy.evaluation or {}
        metrics.update(
            {
                f"policy/{key.replace('mean', 'return_mean').replace('std', 'return_std')}": evaluation.get(key)
                for key in _POLICY_KEYS
            }
        )
        metrics["policy/timesteps"] = policy.timesteps
        metrics["policy/rollout_true_return_mean"] = (run.results.get("rolling_out") or {}).get(
            "rollout_true_return_mean"
        )
    metrics["labels/human"] = run.labels_used
    if run.preference_set is not None:
        metrics["labels/pairs"] = run.preference_set.n_pairs
        for origin, count in (run.preference_set.counts or {}).items():
            metrics[f"labels/{origin}_pairs"] = count
    metrics["labels/queries_published"] = (run.results.get("publishing") or {}).get("queries")
    total = 0.0
    for step in run.steps:
        result = run.results.get(step) or {}
        for key in ("seconds", "cpu_seconds", "waited_seconds"):
            metrics[f"time/{step}_{key}"] = result.get(key)
        total += float(result.get("seconds") or 0.0) + float(result.get("waited_seconds") or 0.0)
    metrics["time/iteration_seconds"] = total
    return tracking.scalars(metrics)


def tracking_dir() -> Path | None:
    configured = str(settings.HERONRY.get("TRACKING_DIR") or "")
    return Path(configured) if configured else None


def iteration_track(*, run: Run) -> dict[str, str]:
    """Write a done iteration's metrics to every configured tracker; returns where they went (by tracker)."""
    if not run.is_iteration or run.state != RunState.DONE or run.number is None:
        return {}
    metrics = iteration_metrics(run)
    name = tracking.safe_name(run.project.slug)
    written: dict[str, str] = {}
    directory = tracking_dir()
    if directory is not None:
        written["tensorboard"] = str(tracking.write_tensorboard(directory / name, metrics, step=run.number))
    uri = str(settings.HERONRY.get("MLFLOW_TRACKING_URI") or "")
    if uri and tracking.write_mlflow(
        uri, name, metrics, step=run.number, tags={"project": run.project.slug, "env_id": run.project.env_id}
    ):
        written["mlflow"] = uri
    return written
