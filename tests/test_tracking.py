"""Experiment tracking: a done iteration's metrics land in TensorBoard event files (and MLflow when configured)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2

from trainer import tracking
from trainer.core import tracking as core_tracking
from trainer.models import PolicyCheckpoint, Run, RunState

from .test_loop import ranked_project, run_iteration  # noqa: F401 (the fixture is used by name)


def read_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the event files of ``directory``: tag -> {step: value}. Event files are TFRecords:
    length (u64), its CRC (u32), the serialised Event, the payload's CRC (u32)."""
    found: dict[str, dict[int, float]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def test_each_done_iteration_writes_its_metrics_as_tensorboard_scalars(
    ranked_project,  # noqa: F811
    researcher,
    django_capture_on_commit_callbacks,
    settings,
):
    first = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks, count=2)
    assert first.state == RunState.DONE, first.error
    second = Run.objects.get(project=ranked_project, number=first.number + 1)
    assert second.state == RunState.DONE, second.error

    scalars = read_scalars(Path(settings.HERONRY["TRACKING_DIR"]) / ranked_project.slug)
    steps = {first.number, second.number}
    for tag in (
        "reward/train_accuracy",
        "reward/train_loss",
        "policy/true_return_mean",
        "policy/learned_return_mean",
        "policy/timesteps",
        "labels/human",
        "labels/pairs",
        "labels/heron_pairs",
        "time/training_policy_seconds",
        "time/training_policy_cpu_seconds",
        "time/iteration_seconds",
    ):
        assert set(scalars.get(tag, {})) == steps, tag
    # The values are the iteration's own (float32 in the file).
    policy = PolicyCheckpoint.objects.get(run=second)
    assert scalars["policy/true_return_mean"][second.number] == pytest.approx(policy.evaluation["true_mean"], rel=1e-6)
    assert scalars["policy/timesteps"][second.number] == policy.timesteps
    # Small preference sets have no validation split (RewardModelConfig.min_val_pairs): only what was measured is
    # written, so the training accuracy is the tag every iteration has.
    assert scalars["reward/train_accuracy"][first.number] == pytest.approx(
        first.reward_model.metrics["train_accuracy"], rel=1e-6
    )
    assert first.reward_model.metrics["val_accuracy"] is not None or "reward/val_accuracy" not in scalars
    # Step results now carry their timings.
    assert second.results["training_policy"]["seconds"] >= 0
    assert second.results["training_policy"]["cpu_seconds"] >= 0


def test_tracking_can_be_turned_off_and_a_failing_tracker_never_fails_the_run(
    ranked_project,  # noqa: F811
    researcher,
    django_capture_on_commit_callbacks,
    settings,
    monkeypatch,
):
    settings.HERONRY = {**settings.HERONRY, "TRACKING_DIR": ""}
    iteration = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks)
    assert iteration.state == RunState.DONE
    assert tracking.iteration_track(run=iteration) == {}

    settings.HERONRY = {**settings.HERONRY, "TRACKING_DIR": str(Path(settings.MEDIA_ROOT).parent / "t2")}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(core_tracking, "write_tensorboard", broken)
    again = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks)
    assert again.state == RunState.DONE


def test_mlflow_is_skipped_with_a_log_line_when_it_is_not_installed(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    monkeypatch.setattr(core_tracking, "_mlflow_missing_logged", False)
    assert not core_tracking.write_mlflow(f"file:{tmp_path}", "p", {"a/b": 1.0}, step=1, tags={})
    assert "mlflow is not installed" in caplog.text


def test_mlflow_gets_one_run_per_project_with_a_step_per_iteration(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    # A local file store (no server, no database); MLflow 3 wants it asked for explicitly.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    uri = f"file:{tmp_path / 'mlruns'}"
    assert core_tracking.write_mlflow(
        uri, "proj", {"policy/true_return_mean": -150.0}, step=1, tags={"project": "proj"}
    )
    assert core_tracking.write_mlflow(
        uri, "proj", {"policy/true_return_mean": -120.0}, step=2, tags={"project": "proj"}
    )
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(core_tracking.MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "policy/true_return_mean")
    assert sorted((m.step, m.value) for m in history) == [(1, -150.0), (2, -120.0)]


def test_only_finite_numbers_are_tracked():
    assert core_tracking.scalars({"a": 1, "b": None, "c": float("nan"), "d": True, "e": "text", "f": 2.5}) == {
        "a": 1.0,
        "d": 1.0,
        "f": 2.5,
    }
