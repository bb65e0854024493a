"""Running a labeling Job in a worker: claim it, do the work, record the result or the error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from labeling.models import Job

logger = logging.getLogger(__name__)


def job_run(job_id: int, work: Callable[[Job], dict[str, Any]]) -> None:
    """Claim a job, run ``work(job)``, and record its result or its error. Running it twice does no harm."""
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None or not job.claim():
        logger.info("job %s is missing or already claimed; nothing to do", job_id)
        return
    try:
        result = work(job)
    except Exception as error:
        logger.exception("job %s failed", job_id)
        job.fail(f"{type(error).__name__}: {error}")
        return
    job.finish(result, message="Done")
