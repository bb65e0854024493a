"""Per-user rate limits on the API requests that start expensive work, named in one table by route.

The counting is labeling.ratelimits's, shared with the pages that start the same work (``rate_limited``).
Rates per scope are in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]; a 429 carries Retry-After and the
API's error shape (code ``throttled``).
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from labeling import ratelimits

# URL name → {method: scope}. Routes not listed are not limited: judgments, leases and reads are what
# annotators and programs do all day.
SCOPES: dict[str, dict[str, str]] = {
    "api-rankings": {"POST": "rankings"},
    "api-runs": {"POST": "runs"},
    "api-reward-models": {"POST": "runs"},  # a retrain run
    "api-export-judgments": {"GET": "exports", "HEAD": "exports"},
    "api-export-preferences": {"GET": "exports", "HEAD": "exports"},
    "api-export-clips": {"GET": "exports", "HEAD": "exports"},
    "api-export-rankings": {"GET": "exports", "HEAD": "exports"},
    "api-export-jobs": {"POST": "exports"},  # starting an asynchronous export (following one is free)
    "api-rollouts": {"POST": "uploads"},  # an uploaded episode (and the run that cuts it into clips)
    "api-import-minari": {"POST": "uploads"},
}


def scope_for(request: Request) -> str | None:
    match = getattr(request, "resolver_match", None)
    return SCOPES.get(getattr(match, "url_name", None) or "", {}).get(request.method or "")


class ActionRateThrottle(BaseThrottle):
    """Looks the request's route up in SCOPES and counts it against its user's allowance for that scope."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        scope = scope_for(request)
        if scope is None:
            return True
        self._wait = ratelimits.hit(scope, ratelimits.request_ident(request))
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
