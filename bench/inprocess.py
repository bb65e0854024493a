"""Driving the platform's runs inside a benchmark process, as a worker would (no broker): shared by bench/loop/curve.py
and bench/mujoco/run.py."""

from __future__ import annotations


def drive(run_id: int):
    """Run a started run's steps one after another in this process, as workers would; returns it finished."""
    from trainer import loop
    from trainer.loop_steps import STEP_WORK
    from trainer.models import Run

    while True:
        run = Run.objects.get(pk=run_id)
        if run.is_finished:
            return run
        if run.state not in run.steps:
            raise RuntimeError(f"{run.title} did not start: {run.state} {run.message}")
        loop.step_run(run.pk, run.state, STEP_WORK[run.state])
