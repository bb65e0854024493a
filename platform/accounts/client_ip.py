"""The client's address, from the socket or from a configured number of trusted proxies.

A client can write any X-Forwarded-For it likes; only the entries our own proxies appended (the rightmost
NUM_PROXIES) can be trusted, so the client is the entry NUM_PROXIES places from the right — the same rule
as DRF's throttles with REST_FRAMEWORK["NUM_PROXIES"]. With NUM_PROXIES = 0 (no proxy in front) the header is
ignored altogether. Used by django-axes (AXES_CLIENT_IP_CALLABLE), the token throttle and the rate limits.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def client_ip(request: Any) -> str:
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = int(getattr(settings, "NUM_PROXIES", 0) or 0)
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    forwarded = [part for part in forwarded if part]
    if not forwarded:  # reached us without passing the proxy (a health check, say)
        return remote
    candidate = forwarded[-min(proxies, len(forwarded))]
    # Our proxy writes a bare address; anything else means a misconfiguration, and an unparsable value must
    # never reach axes' GenericIPAddressField (PostgreSQL's inet would refuse it with a 500).
    return candidate if _is_address(candidate) else remote
