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
