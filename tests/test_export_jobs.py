"""Asynchronous exports: a job written to storage by the worker (Celery runs eagerly here), followed by id,
downloaded by the project's researchers, and announced with a signed ``export.ready`` webhook to a real receiver."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
from django.http import FileResponse

from labeling import events, export_jobs
from labeling.models import ExportJob, WebhookDelivery
from tests.conftest import api_client_for
from tests.test_exports import CHOICES, download, judged  # noqa: F401  (fixture)
from tests.test_webhooks import allow_private, receiver, register  # noqa: F401  (fixtures)


def start(user, project, capture, **body):
    with capture(execute=True):  # the commit: the job's task is sent (and, eagerly, run) after it
        response = api_client_for(user).post(f"/api/v1/projects/{project.slug}/exports/", body, format="json")
    return response


def test_an_export_job_writes_its_file_and_sends_export_ready(
    judged,  # noqa: F811
    researcher,
    allow_private,  # noqa: F811
    receiver,  # noqa: F811
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    monkeypatch.setattr(export_jobs, "PROGRESS_ROWS", 2)  # progress is written along the way
    created = register(judged, researcher, receiver.url, [events.WEBHOOK_EXPORT_READY])
    response = start(researcher, judged, django_capture_on_commit_callbacks, what="judgments", format="parquet")
    assert response.status_code == 202, response.content
    queued = response.json()
    assert queued["status"] == "queued" and queued["download_url"] is None  # before the commit

    client = api_client_for(researcher)
    job = client.get(queued["url"]).json()
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["rows"] == job["total_rows"] == len(CHOICES)
    assert job["download_url"] == f"/api/v1/exports/{job['id']}/download"
    file = client.get(job["download_url"])
    assert file.status_code == 200 and isinstance(file, FileResponse)
    assert file["Content-Type"] == "application/vnd.apache.parquet"
    body = b"".join(file.streaming_content)
    assert job["size"] == len(body)
    streamed = pq.read_table(io.BytesIO(download(researcher, judged, "judgments", "parquet"))).to_pylist()
    assert pq.read_table(io.BytesIO(body)).to_pylist() == streamed  # the same rows as the streamed export
    assert [j["id"] for j in client.get(f"/api/v1/projects/{judged.slug}/exports/").json()] == [job["id"]]

    [message] = receiver.verified(created["secret"])  # signed: verified with the endpoint's secret
    assert message["type"] == "export.ready"
    assert message["data"]["project"] == judged.slug
    export = message["data"]["export"]
    assert export["id"] == job["id"] and export["what"] == "judgments" and export["format"] == "parquet"
    assert export["download_url"] == job["download_url"] and export["status"] == "done"
    assert WebhookDelivery.objects.get().status == "succeeded"


@pytest.mark.parametrize("what", ["clips", "rankings"])
def test_clips_and_rankings_export_as_csv(judged, researcher, django_capture_on_commit_callbacks, what):  # noqa: F811
    job = start(researcher, judged, django_capture_on_commit_callbacks, what=what, format="csv").json()
    file = api_client_for(researcher).get(f"/api/v1/exports/{job['id']}/download")
    assert file.status_code == 200
    assert b"".join(file.streaming_content) == download(researcher, judged, what, "csv")


@pytest.mark.parametrize(
    "body, field",
    [({"what": "secrets", "format": "csv"}, "what"), ({"what": "clips", "format": "xml"}, "format"), ({}, "what")],
)
def test_bad_requests_get_a_400_naming_the_field(judged, researcher, body, field):  # noqa: F811
    response = api_client_for(researcher).post(f"/api/v1/projects/{judged.slug}/exports/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not ExportJob.objects.exists()


def test_active_jobs_per_project_are_capped_and_unfinished_ones_cannot_be_downloaded(
    judged,  # noqa: F811
    researcher,
    settings,
):
    settings.EXPORT_JOBS_ACTIVE_MAX = 1
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{judged.slug}/exports/"
    first = client.post(url, {"what": "clips"}, format="json")  # no commit in the test: it stays queued
    assert first.status_code == 202 and first.json()["format"] == "jsonl"
    again = client.post(url, {"what": "clips"}, format="json")
    assert again.status_code == 409 and "in progress" in again.json()["error"]["message"]
    pending = client.get(f"/api/v1/exports/{first.json()['id']}/download")
    assert pending.status_code == 409 and pending.json()["error"]["code"] == "not_ready"


def test_a_task_delivered_twice_writes_once_and_a_failure_is_recorded(judged, researcher, monkeypatch):  # noqa: F811
    job = export_jobs.export_job_start(project=judged, what="judgments", fmt="jsonl", requested_by=researcher)
    export_jobs.export_job_run(job_id=job.pk)
    job.refresh_from_db()
    name = job.file.name
    export_jobs.export_job_run(job_id=job.pk)  # the same message again: nothing happens
    job.refresh_from_db()
    assert job.status == "done" and job.file.name == name

    def broken(project):
        raise RuntimeError("disk full")

    monkeypatch.setitem(export_jobs.SOURCES, "clips", (broken, lambda p: 0))
    failing = export_jobs.export_job_start(project=judged, what="clips", fmt="csv", requested_by=researcher)
    export_jobs.export_job_run(job_id=failing.pk)
    failing.refresh_from_db()
    assert failing.status == "failed" and "disk full" in failing.error and not failing.file
    detail = api_client_for(researcher).get(f"/api/v1/exports/{failing.pk}/").json()
    assert detail["status"] == "failed" and detail["download_url"] is None


def test_annotators_cannot_start_or_fetch_exports(judged, researcher, annotator):  # noqa: F811
    job = export_jobs.export_job_start(project=judged, what="judgments", fmt="csv", requested_by=researcher)
    export_jobs.export_job_run(job_id=job.pk)
    client = api_client_for(annotator)
    assert client.post(f"/api/v1/projects/{judged.slug}/exports/", {"what": "clips"}, format="json").status_code == 403
    assert client.get(f"/api/v1/exports/{job.pk}/download").status_code == 403


def test_jobs_whose_worker_died_or_task_was_lost_stop_counting(judged, researcher, settings):  # noqa: F811
    from datetime import timedelta

    from django.utils import timezone

    settings.EXPORT_JOBS_ACTIVE_MAX = 2
    long_ago = timezone.now() - timedelta(hours=2)
    running = ExportJob.objects.create(project=judged, what="clips", format="csv", status="running")
    ExportJob.objects.filter(pk=running.pk).update(heartbeat_at=long_ago, started_at=long_ago)
    queued = ExportJob.objects.create(project=judged, what="clips", format="csv", created_at=long_ago)
    fresh = export_jobs.export_job_start(project=judged, what="rankings", fmt="csv", requested_by=researcher)
    running.refresh_from_db()
    queued.refresh_from_db()
    assert running.status == queued.status == "failed" and "stopped reporting" in running.error
    assert fresh.status == "queued"


def test_a_job_failed_as_silent_while_it_ran_keeps_no_file_and_announces_nothing(
    judged,  # noqa: F811
    researcher,
    monkeypatch,
    settings,
):
    from labeling.signals import export_ready

    sent: list[dict] = []
    export_ready.connect(lambda sender, **kwargs: sent.append(kwargs), weak=False, dispatch_uid="test-sent")
    try:

        def count_then_expire(project):
            ExportJob.objects.filter(project=project).update(status="failed", error="silent")  # what expiry does
            return 0

        monkeypatch.setitem(export_jobs.SOURCES, "rankings", (export_jobs.exports.rankings, count_then_expire))
        job = export_jobs.export_job_start(project=judged, what="rankings", fmt="csv", requested_by=researcher)
        export_jobs.export_job_run(job_id=job.pk)
        job.refresh_from_db()
        assert job.status == "failed" and job.error == "silent" and not job.file
        stored = settings.MEDIA_ROOT / "exports"  # a fresh folder per test (tests/conftest.py)
        assert not stored.exists() or not [p for p in stored.rglob("*") if p.is_file()]
        assert sent == []
    finally:
        export_ready.disconnect(dispatch_uid="test-sent")
