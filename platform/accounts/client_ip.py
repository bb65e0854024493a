"""The client's address, from the socket or from a configured number of trusted proxies.

A client can write any X-Forwarded-For it likes; only the entries our own proxies appended (the rightmost
NUM_PROXIES) can be trusted, so the client is the entry NUM_PROXIES places from the right — the same rule
as DRF's throttles with REST_FRAMEWORK["NUM_PROXIES"].
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


def client_ip(request: Any) -> str:
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = int(getattr(settings, "NUM_PROXIES", 0))
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    forwarded = [part for part in forwarded if part]
    if not forwarded:
        return remote
    return forwarded[-min(proxies, len(forwarded))]
