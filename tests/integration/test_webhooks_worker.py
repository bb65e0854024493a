"""A webhook delivered by a real Celery worker (Redis → worker → a receiver on localhost), retried once.

Needs PostgreSQL and Redis (see tests/integration/workers.py); skipped without them.
"""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from labeling import events, webhooks
from labeling.models import WebhookDelivery
from labeling.signals import reward_model_ready
from tests.conftest import make_project
from tests.integration.workers import needs_servers, start_worker, wait_for
from tests.test_webhooks import Receiver, receiver  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.integration]


@pytest.fixture
def worker(transactional_db, settings):
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    worker = start_worker(
        settings.MEDIA_ROOT, queues="default", WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_RETRY_BASE_SECONDS="1"
    )
    yield worker.process
    worker.stop()


@needs_servers
def test_the_worker_retries_and_delivers_a_signed_webhook(worker, researcher, receiver: Receiver, settings):  # noqa: F811
    settings.WEBHOOK_ALLOW_PRIVATE = True
    receiver.answers = [500, 200]
    project = make_project(researcher, slug="webhook-worker")
    endpoint = webhooks.endpoint_create(
        project=project, url=receiver.url, events=[events.WEBHOOK_REWARD_MODEL_READY], created_by=researcher
    )
    # Outside a transaction (transactional_db): the delivery is queued at once, to Redis, for the worker.
    reward_model_ready.send(sender=None, project_id=project.pk, reward_model_id=1, version=1)

    def delivered():
        delivery = WebhookDelivery.objects.filter(endpoint=endpoint).first()
        return delivery if delivery and delivery.status in ("succeeded", "failed") else None

    delivery = wait_for(delivered, timeout=60, what="the worker to deliver the webhook")
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 2, 200)
    messages = [Webhook(endpoint.secret).verify(body, headers) for headers, body in receiver.received]
    assert [m["type"] for m in messages] == ["reward_model.ready", "reward_model.ready"]


@needs_servers
def test_the_worker_writes_an_export_and_announces_it(worker, researcher, receiver: Receiver, settings):  # noqa: F811
    """An asynchronous export end to end: the API's start → Redis → the worker writes the file to storage (its
    progress written from inside the export's server-side cursor) → a signed ``export.ready`` to the receiver."""
    import numpy as np

    from labeling import export_jobs
    from labeling.models import ExportJob
    from labeling.services import queries_create_random
    from tests.conftest import add_fake_clips, api_client_for

    settings.WEBHOOK_ALLOW_PRIVATE = True
    project = make_project(researcher, slug="export-worker")
    queries_create_random(project=project, count=3, rng=np.random.default_rng(0), clips=add_fake_clips(project, 4))
    endpoint = webhooks.endpoint_create(
        project=project, url=receiver.url, events=[events.WEBHOOK_EXPORT_READY], created_by=researcher
    )
    job = export_jobs.export_job_start(project=project, what="clips", fmt="csv", requested_by=researcher)

    def finished():
        found = ExportJob.objects.get(pk=job.pk)
        return found if found.status in ("done", "failed") else None

    done = wait_for(finished, timeout=60, what="the worker to write the export")
    assert done.status == "done", done.error
    assert done.rows == done.total_rows == 4
    body = b"".join(api_client_for(researcher).get(f"/api/v1/exports/{job.pk}/download").streaming_content)
    assert body.decode().splitlines()[0].startswith("id,rollout,run,policy") and len(body.splitlines()) == 5
    wait_for(lambda: len(receiver.received) >= 1, timeout=60, what="the export.ready delivery")
    [message] = [Webhook(endpoint.secret).verify(b, h) for h, b in receiver.received]
    assert message["type"] == "export.ready" and message["data"]["export"]["id"] == job.pk
