"""Running a labeling Job in a worker: claim it, do the work, record the result or the error.

Preference builds and reward-model trainings (COALESCING_JOB_KINDS) run one at a time per project: a delivery
that finds another of its kind running leaves its job queued, and the running one sends the queued one's task
when it ends. With at most one queued (labeling.services.job_queue_coalesced), a burst of requests costs at
most one run now and one after it, on the data as it is then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from labeling import events
from labeling.models import COALESCING_JOB_KINDS, Job, JobStatus
from labeling.services import send_task_by_name

logger = logging.getLogger(__name__)


def job_run(job_id: int, work: Callable[[Job], dict[str, Any]]) -> None:
    """Claim a job, run ``work(job)``, and record its result or its error. Running it twice does no harm."""
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        logger.info("job %s is missing; nothing to do", job_id)
        return
    running = _running_sibling(job)
    if running is not None:
        Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(message=f"Waiting for job #{running} to finish")
        logger.info("job %s waits for job %s of the same kind; that one will send it", job_id, running)
        return
    if not job.claim():
        logger.info("job %s is already claimed; nothing to do", job_id)
        return
    try:
        result = work(job)
    except Exception as error:
        logger.exception("job %s failed", job_id)
        if isinstance(error, OperationalError | InterfaceError) and not connection.in_atomic_block:
            connection.close()  # the connection broke under the work: record the failure on a fresh one
        job.fail(f"{type(error).__name__}: {error}")
    else:
        job.finish(result, message="Done")
    _send_next(job)


def _running_sibling(job: Job) -> int | None:
    """Another job of the same coalescing kind that runs for the project now (its worker alive), if any."""
    if job.kind not in COALESCING_JOB_KINDS:
        return None
    live = Job.objects.filter(
        project_id=job.project_id,
        kind=job.kind,
        status=JobStatus.RUNNING,
        heartbeat_at__gte=timezone.now() - Job.STALE_AFTER,
    )
    return live.exclude(pk=job.pk).values_list("pk", flat=True).first()


def _send_next(job: Job) -> None:
    """After a coalescing job ends, start the one of its kind that waited for it."""
    if job.kind not in COALESCING_JOB_KINDS:
        return
    waiting = (
        Job.objects.filter(project_id=job.project_id, kind=job.kind, status=JobStatus.QUEUED)
        .values_list("pk", flat=True)
        .first()
    )
    if waiting is not None:
        transaction.on_commit(lambda: send_task_by_name(events.JOB_TASKS[job.kind], waiting))
