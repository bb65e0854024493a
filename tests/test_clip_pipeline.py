"""The clip pipeline on a real Gymnasium environment: rollouts → clips → MP4s → random queries."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.models import Clip, Query, RenderStatus
from tests.conftest import run_in_process
from trainer import loop
from trainer.core import rollouts, video
from trainer.loop_steps import STEP_WORK
from trainer.models import Run, RunKind, RunState


def run_job(project, researcher, **params) -> Run:
    return run_in_process(project, researcher, RunKind.GENERATE_CLIPS, **params)


def test_generate_clips_on_pendulum(project, researcher):
    run = run_job(project, researcher, rollouts=2, steps=100, queries=3, seed=7)
    assert run.state == "done", run.error
    # Each step also records its wall, CPU and queue-wait seconds (trainer.loop); the counts are what this checks.
    timing = ("seconds", "cpu_seconds", "waited_seconds")
    result = {k: v for k, v in run.results["generating_clips"].items() if k not in timing}
    assert run.overall_progress == 1.0 and result == {
        "rollouts": 2,
        "clips": 4,
        "queries": 3,
        "rendered": result["rendered"],
        "attempts": 1,
    }
    clips = list(Clip.objects.filter(project=project).select_related("rollout"))
    assert len(clips) == 4 and {c.length for c in clips} == {50}
    # Factor totals are the sums of the rollout's per-step factor values over the segment.
    for clip in clips:
        with clip.rollout.data.open("rb") as handle:
            data = rollouts.load_npz(handle.read())
        expected = data.factors[clip.start : clip.start + clip.length].sum(axis=0)
        assert np.allclose([clip.factor_totals[k] for k in ("angle_sq", "angular_velocity_sq", "torque_sq")], expected)
        assert clip.true_return == pytest.approx(float(data.rewards[clip.start : clip.start + clip.length].sum()))
    # Only the clips someone will see were rendered, as H.264 MP4s with posters.
    queried = set(Query.objects.values_list("clip_a_id", flat=True)) | set(
        Query.objects.values_list("clip_b_id", flat=True)
    )
    assert Query.objects.filter(project=project).count() == 3
    for clip in clips:
        if clip.pk in queried:
            assert clip.render_status == RenderStatus.READY
            info = video.probe_video(clip.video.path)
            assert info.codec == "h264" and info.pix_fmt.startswith("yuv420p") and info.fps == 30
        else:
            assert clip.render_status == RenderStatus.PENDING and not clip.video


def test_the_same_seed_gives_the_same_clips(project, researcher):
    run_job(project, researcher, rollouts=1, steps=50, queries=0, seed=3, render="none")
    first = [c.factor_totals for c in Clip.objects.order_by("id")]
    Clip.objects.all().delete()
    run_job(project, researcher, rollouts=1, steps=50, queries=0, seed=3, render="none")
    assert [c.factor_totals for c in Clip.objects.order_by("id")] == first


def test_a_failing_run_records_its_error(project, researcher):
    run = run_job(project, researcher, rollouts=1, policies=["no_such_policy"])
    assert run.state == "failed"
    assert "no_such_policy" in run.error
    assert run.finished_at is not None


def test_a_run_step_runs_only_once(project, researcher):
    run = run_job(project, researcher, rollouts=1, steps=50, queries=0, render="none")
    step = RunState.GENERATING_CLIPS
    # A duplicate delivery finds the run already past the step.
    assert loop.step_run(run.pk, step, STEP_WORK[step]) is loop.StepOutcome.GONE
    assert Clip.objects.count() == 1


def test_run_progress_is_reported(project, researcher, monkeypatch):
    seen: list[float] = []
    original = loop.StepReporter.__call__

    def spy(self, progress, message):
        seen.append(progress)
        original(self, progress, message)

    monkeypatch.setattr(loop.StepReporter, "__call__", spy)
    run_job(project, researcher, rollouts=2, steps=50, queries=1)
    assert seen == sorted(seen) and seen[0] < 1.0 and seen[-1] == 1.0
