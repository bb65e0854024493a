"""Signed webhooks end to end: a real HTTP receiver on localhost verifies every delivery with ``standardwebhooks``.

Celery runs eagerly (tests/conftest.py), so a retry's backoff is not waited for; the delivery log still records
every attempt. ``WEBHOOK_ALLOW_PRIVATE`` is on where the receiver is on 127.0.0.1, and off for the SSRF checks.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import TestCase
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from labeling import events, webhooks
from labeling.models import Judgment, Query, WebhookDelivery, WebhookEndpoint
from labeling.signals import export_ready, label_budget_reached, reward_model_ready, run_state_changed
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with the next status of ``answers`` (then the last one)."""

    answers: list[int] = field(default_factory=lambda: [200])
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    location: str = ""
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every received body, each verified with the endpoint's secret (raises if a signature is wrong)."""
        return [Webhook(secret).verify(body, headers) for headers, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(({k: v for k, v in self.headers.items()}, body))
            code = state.answers[min(len(state.received), len(state.answers)) - 1]
            self.send_response(code)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.server.shutdown()
    state.server.server_close()


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_CONNECT_TIMEOUT = 2
    settings.WEBHOOK_READ_TIMEOUT = 2
    return settings


def register(project, researcher, url: str, names: list[str]) -> dict[str, Any]:
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{project.slug}/webhooks/", {"url": url, "events": names}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def submit_ranking(project, annotator) -> None:
    groups = [[factor.key] for factor in project.factors.all()]
    response = api_client_for(annotator).post(
        f"/api/v1/projects/{project.slug}/rankings/", {"groups": groups}, format="json"
    )
    assert response.status_code == 201, response.content


# --- registration and the API --------------------------------------------------------------------------------


def test_the_secret_is_shown_once_at_creation(project, researcher, allow_private, receiver):
    created = register(project, researcher, receiver.url, [events.WEBHOOK_RANKING_SUBMITTED])
    assert created["secret"].startswith("whsec_")
    client = api_client_for(researcher)
    listed = client.get(f"/api/v1/projects/{project.slug}/webhooks/").json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]
    detail = client.get(f"/api/v1/webhooks/{created['id']}/").json()
    assert "secret" not in detail and detail["events"] == ["ranking.submitted"]
    changed = client.patch(f"/api/v1/webhooks/{created['id']}/", {"is_active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["is_active"] is False
    assert client.delete(f"/api/v1/webhooks/{created['id']}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_unknown_events_are_refused(project, researcher, allow_private, receiver):
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{project.slug}/webhooks/", {"url": receiver.url, "events": ["nope"]}, format="json"
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://localhost/hook",  # a host name that resolves to loopback
        "ftp://93.184.215.14/hook",
        "file:///etc/passwd",
        "http://user:pw@93.184.215.14/hook",
    ],
)
def test_registration_refuses_private_addresses_and_other_schemes(project, researcher, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{project.slug}/webhooks/",
        {"url": url, "events": [events.WEBHOOK_RANKING_SUBMITTED]},
        format="json",
    )
    assert response.status_code == 400, (url, response.content)
    assert not WebhookEndpoint.objects.exists()


def test_registration_refuses_a_name_that_resolves_to_loopback(project, researcher, settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"evil.example": "127.0.0.1"}))
    with pytest.raises(webhooks.UnsafeURL):
        webhooks.url_check("https://evil.example/hook")
    webhooks.url_check("https://93.184.215.14/hook")  # a public address is fine


def test_patching_the_url_is_checked_again(project, researcher, allow_private, receiver):
    created = register(project, researcher, receiver.url, [events.WEBHOOK_RANKING_SUBMITTED])
    allow_private.WEBHOOK_ALLOW_PRIVATE = False
    response = api_client_for(researcher).patch(
        f"/api/v1/webhooks/{created['id']}/", {"url": "http://10.0.0.1/x"}, format="json"
    )
    assert response.status_code == 400


# --- deliveries ----------------------------------------------------------------------------------------------


def test_a_ranking_is_delivered_signed_after_commit(
    project, researcher, annotator, allow_private, receiver, django_capture_on_commit_callbacks
):
    created = register(project, researcher, receiver.url, [events.WEBHOOK_RANKING_SUBMITTED])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        submit_ranking(project, annotator)
    assert receiver.received == []  # nothing is sent before the transaction commits
    with django_capture_on_commit_callbacks(execute=True):  # the commit: the delivery is queued after it
        for callback in callbacks:
            callback()
    [message] = receiver.verified(created["secret"])
    assert message["type"] == "ranking.submitted"
    assert message["data"]["project"] == project.slug and message["data"]["annotator"] == annotator.username
    headers = receiver.received[0][0]
    delivery = WebhookDelivery.objects.get()
    assert headers["webhook-id"] == delivery.msg_id
    assert delivery.status == "succeeded" and delivery.response_code == 200 and delivery.attempts == 1
    with pytest.raises(WebhookVerificationError):  # another secret does not verify
        Webhook(webhooks.secret_new()).verify(receiver.received[0][1], headers)
    log = api_client_for(researcher).get(f"/api/v1/webhooks/{created['id']}/deliveries/").json()
    assert [(d["status"], d["response_code"], d["attempts"]) for d in log] == [("succeeded", 200, 1)]


def test_a_failing_receiver_gets_the_same_message_again_and_succeeds_on_retry(
    project, researcher, allow_private, receiver
):
    receiver.answers = [500, 200]
    created = register(project, researcher, receiver.url, [events.WEBHOOK_REWARD_MODEL_READY])
    committed(reward_model_ready, project_id=project.pk, reward_model_id=7, version=3)
    messages = receiver.verified(created["secret"])
    assert len(messages) == 2 and messages[0] == messages[1]
    assert messages[0]["data"] == {"project": project.slug, "reward_model_id": 7, "version": 3}
    assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code, delivery.error) == ("succeeded", 2, 200, "")
    assert [(a["attempt"], a["response_code"]) for a in delivery.attempt_log] == [(1, 500), (2, 200)]


def test_deliveries_give_up_after_the_last_attempt(project, researcher, allow_private, receiver):
    receiver.answers = [503]
    allow_private.WEBHOOK_MAX_ATTEMPTS = 5
    register(project, researcher, receiver.url, [events.WEBHOOK_RUN_STATE_CHANGED])
    committed(run_state_changed, project_id=project.pk, run_id=1, kind="iteration", state="done", previous="x")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 5, 503)
    assert len(receiver.received) == 5
    assert webhooks._backoff(1) < webhooks._backoff(2) < webhooks._backoff(4)


def test_redirects_are_not_followed(project, researcher, allow_private, receiver):
    receiver.answers = [302]
    receiver.location = "http://169.254.169.254/latest/meta-data/"
    allow_private.WEBHOOK_MAX_ATTEMPTS = 1
    register(project, researcher, receiver.url, [events.WEBHOOK_EXPORT_READY])
    committed(export_ready, project_id=project.pk, export={"kind": "judgments"})
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.response_code == 302 and "redirect" in delivery.error
    assert len(receiver.received) == 1


def test_events_only_reach_endpoints_that_subscribed_and_are_active(project, researcher, allow_private, receiver):
    register(project, researcher, receiver.url, [events.WEBHOOK_LABEL_BUDGET_REACHED])
    off = register(project, researcher, receiver.url, [events.WEBHOOK_RUN_STATE_CHANGED])
    WebhookEndpoint.objects.filter(pk=off["id"]).update(is_active=False)
    committed(run_state_changed, project_id=project.pk, run_id=1, kind="retrain", state="done", previous="x")
    assert receiver.received == []
    committed(label_budget_reached, project_id=project.pk, run_id=2, labels=40)
    assert [json.loads(body)["type"] for _, body in receiver.received] == ["label_budget.reached"]


def test_delivery_checks_the_address_again(project, researcher, allow_private, receiver):
    """Registered while private addresses were allowed; the operator turned that off: the delivery is refused."""
    register(project, researcher, receiver.url, [events.WEBHOOK_REWARD_MODEL_READY])
    allow_private.WEBHOOK_ALLOW_PRIVATE = False
    allow_private.WEBHOOK_MAX_ATTEMPTS = 1
    committed(reward_model_ready, project_id=project.pk, reward_model_id=1, version=1)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.error.startswith("refused:") and delivery.response_code is None
    assert receiver.received == []


def test_delivery_refuses_a_name_that_now_resolves_to_loopback(project, researcher, settings, monkeypatch):
    """DNS rebinding: the name was public at registration and resolves to 127.0.0.1 at delivery."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"rebind.example": "93.184.215.14"}))
    created = register(project, researcher, "http://rebind.example/hook", [events.WEBHOOK_EXPORT_READY])
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"rebind.example": "127.0.0.1"}))
    committed(export_ready, project_id=project.pk, export={"kind": "judgments"})
    delivery = WebhookDelivery.objects.get(endpoint_id=created["id"])
    assert delivery.status == "failed" and "127.0.0.1" in delivery.error


def test_the_connection_goes_to_the_checked_address(project, researcher, allow_private, receiver, monkeypatch):
    """The URL's host name is resolved once, checked, and connected to by address (Host header kept)."""
    port = receiver.url.split(":")[2].split("/")[0]
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"hooks.test": "127.0.0.1"}))
    created = register(project, researcher, f"http://hooks.test:{port}/hook", [events.WEBHOOK_EXPORT_READY])
    committed(export_ready, project_id=project.pk, export={"kind": "preferences"})
    [message] = receiver.verified(created["secret"])
    assert message["data"]["export"] == {"kind": "preferences"}
    assert receiver.received[0][0]["Host"] == f"hooks.test:{port}"


def test_judgments_are_batched_per_endpoint(
    project_with_queries, researcher, annotator, allow_private, receiver, monkeypatch
):
    """Many judgments, one flush queued per endpoint; the delivery carries their count and id range."""
    project = project_with_queries
    created = register(project, researcher, receiver.url, [events.WEBHOOK_JUDGMENTS_RECORDED])
    queued: list[tuple[Any, ...]] = []
    from labeling import tasks

    def record(args: Any = None, countdown: Any = None, **kwargs: Any) -> None:
        queued.append((args, countdown))

    monkeypatch.setattr(tasks.flush_judgment_webhook, "apply_async", record)
    made = []
    for query in Query.objects.filter(project=project).order_by("id")[:3]:
        judgment = Judgment.objects.create(query=query, annotator=annotator, choice="left", client_id=uuid.uuid4())
        made.append(judgment.pk)
        webhooks.on_judgment_recorded(sender=Judgment, judgment=judgment)
    monkeypatch.undo()
    assert queued == [((created["id"],), allow_private.WEBHOOK_JUDGMENT_BATCH_SECONDS)]
    with TestCase.captureOnCommitCallbacks(execute=True):
        webhooks.judgments_flush(created["id"])
    [message] = receiver.verified(created["secret"])
    assert message["type"] == "judgments.recorded"
    assert message["data"] == {"project": project.slug, "count": 3, "first_id": made[0], "last_id": made[-1]}
    assert webhooks.judgments_flush(created["id"]) is None  # nothing new: no empty delivery
    assert len(receiver.received) == 1


def test_a_judgment_through_the_api_reaches_the_receiver(
    project_with_queries, researcher, annotator, allow_private, receiver, django_capture_on_commit_callbacks
):
    project = project_with_queries
    created = register(project, researcher, receiver.url, [events.WEBHOOK_JUDGMENTS_RECORDED])
    client = api_client_for(annotator)
    lease = client.post(f"/api/v1/projects/{project.slug}/queries/next/", format="json").json()
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"/api/v1/queries/{lease['query']['id']}/judgments/",
            {"choice": "left", "lease": lease["query"]["lease"], "client_id": str(uuid.uuid4())},
            format="json",
        )
    assert answer.status_code == 201, answer.content
    [message] = receiver.verified(created["secret"])
    assert message["data"]["count"] == 1


def test_trainer_run_changes_become_run_state_changed(
    project, researcher, allow_private, receiver, django_capture_on_commit_callbacks
):
    from trainer.loop import run_cancel
    from trainer.models import Run, RunKind, RunState

    created = register(project, researcher, receiver.url, [events.WEBHOOK_RUN_STATE_CHANGED])
    run = Run.objects.create(project=project, kind=RunKind.GENERATE_CLIPS, steps=["generating_clips"])
    assert run.state == RunState.QUEUED
    with django_capture_on_commit_callbacks(execute=True):
        run_cancel(run)
    [message] = receiver.verified(created["secret"])
    assert message["data"] == {
        "project": project.slug,
        "run_id": run.pk,
        "kind": "generate_clips",
        "state": "cancelled",
        "previous": "queued",
    }


# --- helpers -----------------------------------------------------------------------------------------------------


def committed(signal: Any, **kwargs: Any) -> None:
    """Send ``signal`` as the trainer does (after its commit) and commit what the receivers wrote."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        signal.send(sender=None, **kwargs)


def _resolver(names: dict[str, str]):
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real(host, port, *args, **kwargs)

    return getaddrinfo


def test_the_dashboard_lists_the_projects_webhooks(project, researcher, allow_private, receiver, client):
    register(project, researcher, receiver.url, [events.WEBHOOK_REWARD_MODEL_READY])
    committed(reward_model_ready, project_id=project.pk, reward_model_id=1, version=1)
    client.force_login(researcher)
    page = client.get(f"/projects/{project.slug}/").content.decode()
    assert "Webhooks" in page and receiver.url in page and "Succeeded" in page


def test_the_sweep_resends_deliveries_whose_task_was_lost(project, researcher, allow_private, receiver):
    from datetime import timedelta

    from django.utils import timezone

    created = register(project, researcher, receiver.url, [events.WEBHOOK_EXPORT_READY])
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    long_ago = timezone.now() - webhooks.SWEEP_GRACE - timedelta(minutes=1)
    lost = WebhookDelivery.objects.create(
        endpoint=endpoint, msg_id="msg_lost", event="export.ready", payload={"type": "export.ready"}
    )
    WebhookDelivery.objects.filter(pk=lost.pk).update(created_at=long_ago)
    WebhookDelivery.objects.create(endpoint=endpoint, msg_id="msg_fresh", event="export.ready", payload={})
    assert webhooks.deliveries_sweep() == 1
    assert [headers["webhook-id"] for headers, _ in receiver.received] == ["msg_lost"]
    assert WebhookDelivery.objects.get(pk=lost.pk).status == "succeeded"
    assert webhooks.deliveries_sweep() == 0


def test_at_most_the_capped_bytes_of_an_answer_are_read(allow_private, receiver):
    allow_private.WEBHOOK_MAX_RESPONSE_BYTES = 1
    answer = webhooks.post(receiver.url, b"{}", {})
    assert answer.status == 200 and answer.body == b"o"
