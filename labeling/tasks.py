"""Periodic housekeeping for labeling (run by Celery beat)."""

from __future__ import annotations

from celery import shared_task

from . import assignment


@shared_task(name="labeling.sweep_leases")
def sweep_leases() -> int:
    return assignment.leases_sweep_expired()
