"""Per-user rate limits on the API writes that start expensive work, named in one table by route."""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

# (URL name, method) → throttle scope; rates per scope are in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].
SCOPES: dict[tuple[str, str], str] = {
    ("api-rankings", "POST"): "rankings",
    ("api-jobs", "POST"): "runs",
    ("api-reward-models", "POST"): "runs",
    ("api-iterations", "POST"): "runs",
    ("api-export-judgments", "GET"): "exports",
    ("api-export-preferences", "GET"): "exports",
}


class ActionRateThrottle(SimpleRateThrottle):
    """Looks the request's route up in SCOPES; routes not listed are not limited."""

    def __init__(self) -> None:  # the scope is known only per request
        pass

    def allow_request(self, request, view):  # type: ignore[no-untyped-def]
        match = getattr(request, "resolver_match", None)
        self.scope = SCOPES.get((getattr(match, "url_name", None) or "", request.method or ""))
        if self.scope is None:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):  # type: ignore[no-untyped-def]
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
