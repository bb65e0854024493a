"""Experiment tracking: a loop iteration's metrics as TensorBoard event files, and to MLflow when configured.

Researchers compare runs in the tools they already use. Each project is one TensorBoard run directory
(``<tracking dir>/<project slug>``) and one MLflow run (named after the project, in the experiment
``heronry``); each iteration is one step, its number. Tags are ``group/name`` (``reward/val_accuracy``,
``policy/true_return_mean``, ``labels/human``, ``time/training_policy_seconds`` ...), so TensorBoard shows
one section per group.

TensorBoard files are written with tensorboardX (numpy + protobuf, no TensorFlow, no tensorboard server).
MLflow is optional and heavy: it is imported only when a tracking URI is given, and a missing package is
logged once and skipped, never an error (``pip install -e .[mlflow]``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

MLFLOW_EXPERIMENT = "heronry"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_mlflow_missing_logged = False


def scalars(metrics: Mapping[str, object]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (bools as 0/1) as floats; None, NaN, text and the rest are left out."""
    found: dict[str, float] = {}
    for tag, value in metrics.items():
        if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
            found[tag] = float(value)
    return found


def write_tensorboard(log_dir: Path, metrics: Mapping[str, float], *, step: int) -> Path:
    """Append ``metrics`` at ``step`` to the TensorBoard run in ``log_dir`` (created if missing).

    Each call writes its own event file (tensorboardX names them by time and host), which TensorBoard reads
    as one run with the directory's other files; returns the directory.
    """
    from tensorboardX import SummaryWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(logdir=str(log_dir), flush_secs=1)
    try:
        for tag, value in sorted(metrics.items()):
            writer.add_scalar(tag, value, global_step=step)
    finally:
        writer.close()
    return log_dir


def write_mlflow(uri: str, run_name: str, metrics: Mapping[str, float], *, step: int, tags: Mapping[str, str]) -> bool:
    """Log ``metrics`` at ``step`` to the MLflow run named ``run_name`` (one per project, resumed by name) at
    ``uri``. Returns False, after one log line, when mlflow is not installed."""
    global _mlflow_missing_logged
    try:
        import mlflow
    except ImportError:
        if not _mlflow_missing_logged:
            logger.warning("MLFLOW_TRACKING_URI is set but mlflow is not installed (pip install -e .[mlflow]): skipped")
            _mlflow_missing_logged = True
        return False
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(MLFLOW_EXPERIMENT)
    found = client.search_runs([experiment_id], filter_string=f"tags.heronry_run = '{run_name}'", max_results=1)
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(experiment_id, run_name=run_name, tags={"heronry_run": run_name, **tags}).info.run_id
    )
    timestamp = int(time.time() * 1000)
    entities = [
        mlflow.entities.Metric(key=_mlflow_key(tag), value=value, timestamp=timestamp, step=step)
        for tag, value in sorted(metrics.items())
    ]
    client.log_batch(run_id, metrics=entities)
    return True


def _mlflow_key(tag: str) -> str:
    # MLflow allows letters, digits and _ - . / and space in metric names; anything else becomes _.
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", tag)


def safe_name(name: str) -> str:
    """A project's slug as one path component (slugs are safe already; this guards the rule, not the data)."""
    cleaned = _UNSAFE.sub("_", name).strip(".")
    return cleaned or "project"
