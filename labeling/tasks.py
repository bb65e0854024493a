"""Periodic housekeeping for labeling (run by Celery beat)."""

from __future__ import annotations

from celery import shared_task

from . import assignment, events


@shared_task(name=events.SWEEP_LEASES)
def sweep_leases() -> int:
    return assignment.leases_sweep_expired()


@shared_task(name=events.DELIVER_WEBHOOK)
def deliver_webhook(delivery_id: int) -> None:
    """One attempt of a webhook delivery (labeling.webhooks.deliver queues the next one on failure)."""
    from . import webhooks

    webhooks.deliver(delivery_id)


@shared_task(name=events.FLUSH_JUDGMENT_WEBHOOK)
def flush_judgment_webhook(endpoint_id: int) -> None:
    """The batched "judgments.recorded" delivery of one endpoint."""
    from . import webhooks

    webhooks.judgments_flush(endpoint_id)


@shared_task(name=events.SWEEP_WEBHOOKS)
def sweep_webhooks() -> int:
    """Re-send webhook deliveries and judgment batches whose task was lost (a broker or worker outage)."""
    from . import webhooks

    return webhooks.deliveries_sweep()


@shared_task(name=events.BUILD_EXPORT)
def build_export(job_id: int) -> None:
    """Write one asynchronous export to storage, then announce it (``export.ready``)."""
    from . import export_jobs

    export_jobs.export_job_run(job_id=job_id)


@shared_task(name=events.REFRESH_QUALITY_REPORT)
def refresh_quality_report(project_id: int) -> None:
    """Recompute a project's quality report into the cache (the dashboard shows the previous one meanwhile)."""
    from . import selectors

    selectors.quality_report_refresh(project_id)


@shared_task(name=events.REFRESH_LABEL_TALLIES)
def refresh_label_tallies(project_id: int) -> None:
    """Count a big project's label tallies into the cache (the dashboard says "counting…" meanwhile)."""
    from . import selectors

    selectors.label_tallies_refresh(project_id)
