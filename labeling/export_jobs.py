"""Asynchronous exports: the same rows and formats as the streamed exports (labeling.exports), written by a worker to
Django storage for projects too large to fetch in one request, then announced with the ``export.ready`` webhook.

A job is a small model of its own (``ExportJob``), not a trainer run: it only reads, so it must not queue in the
project's single lane behind a training run, and labeling (which owns the rows) never imports the trainer. The
worker claims a queued job by a conditional update (a task delivered twice writes once), streams the export into a
temporary file with constant memory, and stores it through ``labeling.files.store_file`` (storage API only).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import User

from . import events, exports
from .clips import render_stale_after
from .errors import Conflict, ValidationFailed
from .files import store_file
from .models import Clip, ExportJob, ExportStatus, FactorRanking, Judgment, Project
from .services import send_task_by_name
from .signals import export_ready

logger = logging.getLogger(__name__)

# What may be exported asynchronously: the export's rows, and how many there will be (for progress).
SOURCES: dict[str, tuple[Callable[[Project], exports.Export], Callable[[Project], int]]] = {
    "judgments": (exports.judgments, lambda p: Judgment.objects.filter(query__project=p).count()),
    "clips": (exports.clips, lambda p: Clip.objects.filter(project=p).count()),
    "rankings": (exports.rankings, lambda p: FactorRanking.objects.filter(project=p).count()),
}
PROGRESS_ROWS = 50_000  # rows between two progress writes (each a heartbeat)
ACTIVE = (ExportStatus.QUEUED, ExportStatus.RUNNING)
# A job still queued after this long lost its task (a broker outage); it is failed so another can start.
QUEUED_LIMIT = timedelta(hours=1)


def export_jobs_expire(*, project: Project) -> int:
    """Fail the project's jobs whose worker died (running, silent for ``RUN_STALE_SECONDS``) or whose task was
    lost (queued for ``QUEUED_LIMIT``), so they stop counting against the limit; returns how many."""
    now = timezone.now()
    silent = now - render_stale_after()  # the one stale limit (RUN_STALE_SECONDS) every worker's claim uses
    dead = Q(status=ExportStatus.RUNNING, heartbeat_at__lt=silent) | Q(
        status=ExportStatus.QUEUED, created_at__lt=now - QUEUED_LIMIT
    )
    return ExportJob.objects.filter(dead, project=project).update(
        status=ExportStatus.FAILED, error="its worker stopped reporting (start the export again)", finished_at=now
    )


def export_job_start(*, project: Project, what: str, fmt: str, requested_by: User | None) -> ExportJob:
    """Queue an export of ``what`` as ``fmt``; its task is sent after commit. At most
    ``EXPORT_JOBS_ACTIVE_MAX`` of a project's jobs may be queued or running at once (Conflict, 409, beyond)."""
    fields: dict[str, list[str]] = {}
    if what not in SOURCES:
        fields["what"] = [" or ".join(SOURCES)]
    if fmt not in exports.FORMATS:
        fields["format"] = [" or ".join(exports.FORMATS)]
    if fields:
        raise ValidationFailed("what must be judgments, clips or rankings; format jsonl, csv or parquet", fields=fields)
    limit = settings.EXPORT_JOBS_ACTIVE_MAX
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # one start at a time per project
        export_jobs_expire(project=project)
        if ExportJob.objects.filter(project=project, status__in=ACTIVE).count() >= limit:
            raise Conflict(
                f"this project has {limit} export(s) in progress (queued or running); wait for one to finish"
            )
        job = ExportJob.objects.create(project=project, what=what, format=fmt, requested_by=requested_by)
        transaction.on_commit(lambda: send_task_by_name(events.BUILD_EXPORT, job.pk))
    return job


def _write_progress(job_id: int, rows: int) -> None:
    """Record progress so other connections see it now. Inside the export's transaction (its server-side cursor
    on PostgreSQL) an update would stay invisible until the end, so it goes through a connection of its own."""

    def write() -> None:
        try:
            ExportJob.objects.filter(pk=job_id, status=ExportStatus.RUNNING).update(
                rows=rows, heartbeat_at=timezone.now()
            )
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()

    # Outside a transaction, or on SQLite (one writer at a time: a second connection would wait for the export's
    # own transaction), the update goes through this connection.
    if not connection.in_atomic_block or connection.vendor == "sqlite":
        ExportJob.objects.filter(pk=job_id, status=ExportStatus.RUNNING).update(rows=rows, heartbeat_at=timezone.now())
        return
    worker = threading.Thread(target=write, name=f"export-{job_id}-progress")
    worker.start()
    worker.join()


def _counted(job_id: int, rows: Iterable[tuple[Any, ...]], tally: list[int]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        yield row
        tally[0] += 1
        if tally[0] % PROGRESS_ROWS == 0:
            _write_progress(job_id, tally[0])


def export_job_run(*, job_id: int) -> None:
    """The worker's side: claim the queued job, write its file, mark it done (or failed) and announce it."""
    started = timezone.now()
    if not ExportJob.objects.filter(pk=job_id, status=ExportStatus.QUEUED).update(
        status=ExportStatus.RUNNING, started_at=started, heartbeat_at=started
    ):
        return  # delivered twice, or already finished
    job = ExportJob.objects.select_related("project").get(pk=job_id)
    source, count = SOURCES[job.what]
    try:
        ExportJob.objects.filter(pk=job_id).update(total_rows=count(job.project))
        export = source(job.project)
        tally = [0]
        counted = exports.Export(export.columns, _counted(job_id, export.rows, tally))
        with tempfile.TemporaryFile() as spool:
            written = 0
            for chunk in exports.stream(counted, job.format):
                spool.write(chunk)
                written += len(chunk)
            spool.seek(0)
            store_file(job.file, f"{job.project.slug}-{job.what}-{job.pk}.{job.format}", File(spool))
    except Exception as error:  # the job records why; the worker goes on
        logger.exception("export %s failed", job_id)
        ExportJob.objects.filter(pk=job_id, status=ExportStatus.RUNNING).update(
            status=ExportStatus.FAILED, error=str(error)[:2000], finished_at=timezone.now()
        )
        return
    with transaction.atomic():
        updated = ExportJob.objects.filter(pk=job_id, status=ExportStatus.RUNNING).update(
            status=ExportStatus.DONE,
            file=job.file.name,
            size=written,
            rows=tally[0],
            finished_at=timezone.now(),
        )
        if not updated:  # failed meanwhile as silent (labeling.export_jobs.export_jobs_expire): nobody wants it
            job.file.delete(save=False)
            return
        job.refresh_from_db()
        payload = export_payload(job)
        project_id = job.project_id
        transaction.on_commit(lambda: export_ready.send(sender=ExportJob, project_id=project_id, export=payload))


def export_payload(job: ExportJob) -> dict[str, Any]:
    """What a job is and where to fetch it: the API's answer and the ``export.ready`` event's ``export``."""
    done = job.status == ExportStatus.DONE
    return {
        "id": job.pk,
        "kind": "export",
        "what": job.what,
        "format": job.format,
        "status": job.status,
        "rows": job.rows,
        "total_rows": job.total_rows,
        "progress": round(job.progress, 4),
        "size": job.size,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "url": f"/api/v1/exports/{job.pk}/",
        "download_url": f"/api/v1/exports/{job.pk}/download" if done else None,
    }


def export_jobs_of(project: Project) -> QuerySet[ExportJob]:
    return ExportJob.objects.filter(project=project).order_by("-created_at", "-id")
