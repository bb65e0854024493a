"""Periodic housekeeping for labeling (run by Celery beat)."""

from __future__ import annotations

from celery import shared_task

from . import assignment, events


@shared_task(name=events.SWEEP_LEASES)
def sweep_leases() -> int:
    return assignment.leases_sweep_expired()
