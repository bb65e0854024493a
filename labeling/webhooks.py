"""Signed webhooks: endpoints per project, deliveries per the Standard Webhooks spec, SSRF-safe HTTP.

- Event types live in ``labeling.events`` (``WEBHOOK_EVENTS``). labeling's own events (judgments, rankings) and the
  trainer's (sent through ``labeling.signals``: run state changes, reward models, label budgets) reach
  ``emit``, which stores one ``WebhookDelivery`` per subscribed endpoint and sends the delivery task after commit:
  the request that caused an event never waits for an endpoint.
- "judgments.recorded" is batched: at most one delivery per endpoint per ``WEBHOOK_JUDGMENT_BATCH_SECONDS``,
  carrying the count and the id range of the judgments since the last one.
- Each attempt is signed (``standardwebhooks``: webhook-id, webhook-timestamp, webhook-signature), sent with short
  timeouts, no redirects and a cap on the response bytes read, to the address checked just before (the
  connection is pinned to it, so a DNS answer that changes between the check and the connect can't redirect it).
  A failed attempt is retried with exponential backoff, ``WEBHOOK_MAX_ATTEMPTS`` in all.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import secrets
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from . import events, signals
from .errors import ValidationFailed
from .models import (
    FactorRanking,
    Judgment,
    Project,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)

logger = logging.getLogger(__name__)

USER_AGENT = "Heronry-Webhooks/1"
MAX_ENDPOINTS_PER_PROJECT = 20


# --- SSRF: which addresses an endpoint may have ------------------------------------------------------------


class UnsafeURL(ValidationFailed):
    """The URL is not one the platform will send to."""


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    address: str  # the resolved address the connection goes to


def resolve(url: str) -> Target:
    """Check ``url`` and resolve its host; raise UnsafeURL unless every address it resolves to is allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeURL(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("only http and https URLs are allowed")
    host = parts.hostname
    if not host:
        raise UnsafeURL("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials in the URL are not allowed")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeURL(f"the host {host!r} does not resolve") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise UnsafeURL(f"the host {host!r} does not resolve")
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for text in addresses:
            if not _address_allowed(ipaddress.ip_address(text)):
                raise UnsafeURL(
                    f"the host {host!r} resolves to {text}, a loopback, private, link-local, multicast or reserved "
                    "address (not allowed: WEBHOOK_ALLOW_PRIVATE is off)"
                )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


# --- HTTP: one POST to a pinned address ------------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=connect_timeout)
        self._address = target.address
        self._read_timeout = read_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.settimeout(self._read_timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=connect_timeout, context=ssl.create_default_context())
        self._address = target.address
        self._read_timeout = read_timeout

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        raw.settimeout(self._read_timeout)
        # The certificate is checked against the URL's host name (SNI too), not the address.
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class Response:
    status: int
    body: bytes


def post(url: str, body: bytes, headers: dict[str, str]) -> Response:
    """POST ``body`` to ``url``: checked and resolved (``resolve``) right before, connected to that address, no
    redirects followed, at most WEBHOOK_MAX_RESPONSE_BYTES read within WEBHOOK_READ_TIMEOUT seconds."""
    target = resolve(url)
    connect_timeout = float(settings.WEBHOOK_CONNECT_TIMEOUT)
    read_timeout = float(settings.WEBHOOK_READ_TIMEOUT)
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, connect_timeout, read_timeout)
    deadline = time.monotonic() + connect_timeout + read_timeout
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT, "Connection": "close"},
        )
        response = connection.getresponse()
        limit = int(settings.WEBHOOK_MAX_RESPONSE_BYTES)
        chunks: list[bytes] = []
        read = 0
        while read < limit and time.monotonic() < deadline:
            chunk = response.read1(min(8192, limit - read))
            if not chunk:
                break
            chunks.append(chunk)
            read += len(chunk)
        return Response(status=response.status, body=b"".join(chunks))
    finally:
        connection.close()


# --- Endpoints ---------------------------------------------------------------------------------------------------


def secret_new() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def events_check(names: Any) -> list[str]:
    if not isinstance(names, list) or not names:
        raise ValidationFailed("events: a non-empty list of event types")
    unknown = [name for name in names if not isinstance(name, str) or name not in events.WEBHOOK_EVENTS]
    if unknown:
        raise ValidationFailed(f"events: unknown event types {unknown!r}; known: {sorted(events.WEBHOOK_EVENTS)}")
    return sorted(set(names))


def url_check(url: str) -> str:
    if not isinstance(url, str) or len(url) > 2000:
        raise UnsafeURL("url: at most 2000 characters")
    resolve(url)
    return url


def endpoint_create(
    *, project: Project, url: str, events: list[str], description: str = "", is_active: bool = True, created_by=None
) -> WebhookEndpoint:
    """A new endpoint; its ``secret`` is shown to the caller this once."""
    if WebhookEndpoint.objects.filter(project=project).count() >= MAX_ENDPOINTS_PER_PROJECT:
        raise ValidationFailed(f"a project has at most {MAX_ENDPOINTS_PER_PROJECT} webhook endpoints")
    url_check(url)
    newest = Judgment.objects.filter(query__project=project).aggregate(newest=Max("id"))["newest"] or 0
    return WebhookEndpoint.objects.create(
        project=project,
        url=url,
        events=events_check(events),
        description=description,
        is_active=is_active,
        secret=secret_new(),
        created_by=created_by,
        judgments_sent_through=newest,
    )


def endpoint_update(endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    if "url" in changes:
        url_check(changes["url"])
    if "events" in changes:
        changes["events"] = events_check(changes["events"])
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.save()
    return endpoint


def endpoints_overview(project: Project) -> list[dict[str, Any]]:
    """The dashboard's list: each endpoint with its newest delivery and how many of its deliveries failed."""
    rows = []
    for endpoint in project.webhooks.order_by("id"):
        deliveries = endpoint.deliveries.order_by("-created_at", "-id")
        rows.append(
            {
                "endpoint": endpoint,
                "last": deliveries.first(),
                "failed": deliveries.filter(status=WebhookDeliveryStatus.FAILED).count(),
            }
        )
    return rows


# --- Emitting events -------------------------------------------------------------------------------------------


def _message(event: str, project: Project, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event,
        "timestamp": timezone.now().isoformat(),
        "data": {"project": project.slug, **data},
    }


def _deliver_after_commit(delivery_ids: list[int]) -> None:
    if not delivery_ids:
        return

    def send() -> None:
        from .tasks import deliver_webhook

        for delivery_id in delivery_ids:
            try:
                deliver_webhook.apply_async(args=(delivery_id,))
            except Exception:  # a broker outage must not fail the request that caused the event
                logger.exception("webhook delivery %s: could not queue it", delivery_id)

    transaction.on_commit(send)


def _subscribed(project_id: int, event: str) -> list[WebhookEndpoint]:
    endpoints = WebhookEndpoint.objects.filter(project_id=project_id, is_active=True).select_related("project")
    return [endpoint for endpoint in endpoints if event in (endpoint.events or [])]


def emit(*, project_id: int, event: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Store a delivery of ``event`` for every active endpoint of the project that subscribed to it, and send them
    after the current transaction commits (at once outside one)."""
    if event not in events.WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    deliveries = [
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            msg_id=f"msg_{uuid.uuid4().hex}",
            event=event,
            payload=_message(event, endpoint.project, data),
        )
        for endpoint in _subscribed(project_id, event)
    ]
    _deliver_after_commit([delivery.pk for delivery in deliveries])
    return deliveries


# --- judgments.recorded, batched ----------------------------------------------------------------------------


def judgments_batch_request(project_id: int) -> None:
    """A judgment was recorded: every subscribed endpoint without a batch on its way gets one, flushed in
    WEBHOOK_JUDGMENT_BATCH_SECONDS (a batch whose flush was lost, due long ago, is asked for again)."""
    from .tasks import flush_judgment_webhook

    seconds = int(settings.WEBHOOK_JUDGMENT_BATCH_SECONDS)
    now = timezone.now()
    for endpoint in _subscribed(project_id, events.WEBHOOK_JUDGMENTS_RECORDED):
        stale = now - timedelta(seconds=5 * seconds + 60)
        claimed = (
            WebhookEndpoint.objects.filter(pk=endpoint.pk)
            .filter(Q(judgments_due_at__isnull=True) | Q(judgments_due_at__lt=stale))
            .update(judgments_due_at=now + timedelta(seconds=seconds))
        )
        if claimed:
            try:
                flush_judgment_webhook.apply_async(args=(endpoint.pk,), countdown=seconds)
            except Exception:
                logger.exception("webhook endpoint %s: could not queue the judgments batch", endpoint.pk)


def judgments_flush(endpoint_id: int) -> WebhookDelivery | None:
    """Deliver the judgments recorded since the endpoint's last batch (their count and id range)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().select_related("project").filter(pk=endpoint_id).first()
        if endpoint is None:
            return None
        new = Judgment.objects.filter(query__project_id=endpoint.project_id, pk__gt=endpoint.judgments_sent_through)
        summary = new.aggregate(count=Count("id"), first=Min("id"), last=Max("id"))
        endpoint.judgments_due_at = None
        delivery = None
        if summary["count"] and endpoint.is_active and events.WEBHOOK_JUDGMENTS_RECORDED in (endpoint.events or []):
            endpoint.judgments_sent_through = summary["last"]
            data = {"count": summary["count"], "first_id": summary["first"], "last_id": summary["last"]}
            delivery = WebhookDelivery.objects.create(
                endpoint=endpoint,
                msg_id=f"msg_{uuid.uuid4().hex}",
                event=events.WEBHOOK_JUDGMENTS_RECORDED,
                payload=_message(events.WEBHOOK_JUDGMENTS_RECORDED, endpoint.project, data),
            )
            _deliver_after_commit([delivery.pk])
        endpoint.save(update_fields=["judgments_due_at", "judgments_sent_through"])
    return delivery


# --- Delivering ------------------------------------------------------------------------------------------------


def _backoff(attempt: int) -> int:
    return int(settings.WEBHOOK_RETRY_BASE_SECONDS) * 2 ** max(0, attempt - 1)


def deliver(delivery_id: int) -> WebhookDelivery | None:
    """One attempt; a failure queues the next one (exponential backoff) until WEBHOOK_MAX_ATTEMPTS."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (WebhookDeliveryStatus.SUCCEEDED, WebhookDeliveryStatus.FAILED):
        return delivery
    endpoint = delivery.endpoint
    attempt = delivery.attempts + 1
    started = timezone.now()
    clock = time.monotonic()
    code: int | None = None
    error = ""
    if not endpoint.is_active:
        error = "the endpoint is disabled"
    else:
        body = _body(delivery.payload)
        headers = _signed_headers(endpoint.secret, delivery.msg_id, body)
        try:
            response = post(endpoint.url, body, headers)
            code = response.status
            if not 200 <= code < 300:
                error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        except UnsafeURL as refused:
            error = f"refused: {refused}"
        except (OSError, http.client.HTTPException, ssl.SSLError) as failure:
            error = f"{type(failure).__name__}: {failure}"[:2000]
    duration_ms = int((time.monotonic() - clock) * 1000)
    succeeded = not error
    final = succeeded or attempt >= int(settings.WEBHOOK_MAX_ATTEMPTS) or not endpoint.is_active
    status = (
        WebhookDeliveryStatus.SUCCEEDED
        if succeeded
        else (WebhookDeliveryStatus.FAILED if final else WebhookDeliveryStatus.RETRYING)
    )
    wait = 0 if final else _backoff(attempt)
    delivery.attempts = attempt
    delivery.status = status
    delivery.response_code = code
    delivery.error = error
    delivery.duration_ms = duration_ms
    delivery.last_attempt_at = started
    delivery.next_attempt_at = None if final else started + timedelta(seconds=wait)
    delivery.delivered_at = started if succeeded else None
    delivery.attempt_log = [
        *(delivery.attempt_log or []),
        {
            "attempt": attempt,
            "at": started.isoformat(),
            "response_code": code,
            "error": error,
            "duration_ms": duration_ms,
        },
    ][-20:]
    delivery.save()
    if not final:
        from .tasks import deliver_webhook

        deliver_webhook.apply_async(args=(delivery.pk,), countdown=wait)
    return delivery


SWEEP_GRACE = timedelta(minutes=15)


def deliveries_sweep(*, limit: int = 500) -> int:
    """Deliveries still pending, or retrying, SWEEP_GRACE after they were due, and judgment batches overdue as
    long, lost their task (a broker outage, a purge): send them again. The webhook-id stays the same, so a
    receiver that did get the first try can tell the second from a new message. Returns how many were sent."""
    from .tasks import deliver_webhook, flush_judgment_webhook

    due = timezone.now() - SWEEP_GRACE
    lost = WebhookDelivery.objects.filter(
        Q(status=WebhookDeliveryStatus.PENDING, created_at__lt=due)
        | Q(status=WebhookDeliveryStatus.RETRYING, next_attempt_at__lt=due)
    ).order_by("id")
    ids = list(lost.values_list("pk", flat=True)[:limit])
    for delivery_id in ids:
        deliver_webhook.apply_async(args=(delivery_id,))
    batches = list(WebhookEndpoint.objects.filter(judgments_due_at__lt=due).values_list("pk", flat=True)[:limit])
    for endpoint_id in batches:
        flush_judgment_webhook.apply_async(args=(endpoint_id,))
    return len(ids) + len(batches)


def _body(payload: Any) -> bytes:
    import json

    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    now = timezone.now()
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=now, data=body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}


# --- Receivers: labeling's signals → deliveries ---------------------------------------------------------------


def on_judgment_recorded(sender: type, judgment: Judgment, **kwargs: Any) -> None:
    judgments_batch_request(judgment.query.project_id)


def on_ranking_submitted(sender: type, ranking: FactorRanking, **kwargs: Any) -> None:
    emit(
        project_id=ranking.project_id,
        event=events.WEBHOOK_RANKING_SUBMITTED,
        data={"ranking_id": ranking.pk, "annotator": ranking.annotator.get_username(), "groups": ranking.groups},
    )


def on_run_state_changed(
    sender: Any, project_id: int, run_id: int, kind: str, state: str, previous: str, **kwargs: Any
) -> None:
    emit(
        project_id=project_id,
        event=events.WEBHOOK_RUN_STATE_CHANGED,
        data={"run_id": run_id, "kind": kind, "state": state, "previous": previous},
    )


def on_reward_model_ready(sender: Any, project_id: int, reward_model_id: int, version: int, **kwargs: Any) -> None:
    emit(
        project_id=project_id,
        event=events.WEBHOOK_REWARD_MODEL_READY,
        data={"reward_model_id": reward_model_id, "version": version},
    )


def on_label_budget_reached(sender: Any, project_id: int, run_id: int, labels: int, **kwargs: Any) -> None:
    emit(project_id=project_id, event=events.WEBHOOK_LABEL_BUDGET_REACHED, data={"run_id": run_id, "labels": labels})


def on_export_ready(sender: Any, project_id: int, export: dict[str, Any], **kwargs: Any) -> None:
    emit(project_id=project_id, event=events.WEBHOOK_EXPORT_READY, data={"export": export})


def _guarded(receiver: Any) -> Any:
    """A receiver that logs instead of raising: a webhook problem never fails what caused the event."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception:
            logger.exception("webhooks: %s failed", receiver.__name__)

    run.__name__ = receiver.__name__
    return run


_RECEIVERS = [
    (signals.judgment_recorded, _guarded(on_judgment_recorded)),
    (signals.ranking_submitted, _guarded(on_ranking_submitted)),
    (signals.run_state_changed, _guarded(on_run_state_changed)),
    (signals.reward_model_ready, _guarded(on_reward_model_ready)),
    (signals.label_budget_reached, _guarded(on_label_budget_reached)),
    (signals.export_ready, _guarded(on_export_ready)),
]


def connect() -> None:
    """Called from labeling's AppConfig.ready."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, dispatch_uid=f"webhooks-{receiver.__name__}")
