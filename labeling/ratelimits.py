"""Per-user rate limits on the requests that start expensive work, shared by the API and the pages.

One counter per (scope, user): the API's throttle (labeling.api.throttles) and the page decorator
``rate_limited`` below both call ``hit``, so a ranking sent through the API and one sent from the ranking page
use up the same allowance. Rates are DRF's ``DEFAULT_THROTTLE_RATES`` (``"20/hour"``), set from the environment.

Counting is a sliding-window counter in the cache: the current fixed window's count, plus the previous
window's count weighted by how much of it still overlaps the sliding window. Each hit is one atomic ``incr``
(Redis in production, a lock in LocMem), so simultaneous requests cannot all slip through the way a
read-modify-write history would let them. Refused requests are not counted.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.template import Context, Engine, TemplateDoesNotExist
from django.template.context import RequestContext
from django.utils.http import url_has_allowed_host_and_scheme
from rest_framework.settings import api_settings

from accounts.client_ip import client_ip

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}

clock: Callable[[], float] = time.time  # tests move time by replacing this


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds

    @classmethod
    def parse(cls, raw: str) -> Rate:
        """DRF's notation: ``"<count>/<s|sec|m|min|h|hour|d|day>"``."""
        count, _, period = raw.partition("/")
        try:
            return cls(limit=int(count), period=_PERIODS[period.strip()[:1]])
        except (ValueError, KeyError):
            raise ImproperlyConfigured(f"bad rate {raw!r}: use e.g. '20/hour'") from None

    def __str__(self) -> str:
        return f"{self.limit} per {_PERIOD_WORDS[self.period]}"


def rate_for(scope: str) -> Rate | None:
    """The scope's rate, or None where the rate is set to None (no limit). An unknown scope is a bug."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    if scope not in rates:
        raise ImproperlyConfigured(f"no rate for scope {scope!r} in REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']")
    raw = rates[scope]
    return None if raw is None else Rate.parse(str(raw))


def request_ident(request: Any) -> str:
    """Whom a request counts against: its user, or (anonymous) its client address."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip(request)}"


def _key(scope: str, ident: str, window: int) -> str:
    return f"ratelimit:{scope}:{ident}:{window}"


def _incr(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def hit(scope: str, ident: str) -> float | None:
    """Count one request of ``ident`` in ``scope``: None when allowed, else the seconds to wait (not counted)."""
    rate = rate_for(scope)
    if rate is None:
        return None
    now = clock()
    window, offset = divmod(now, rate.period)
    elapsed = offset / rate.period  # how far into the current window, 0..1
    current_key = _key(scope, ident, int(window))
    current = _incr(current_key, 2 * rate.period)
    previous = int(cache.get(_key(scope, ident, int(window) - 1), 0))
    if previous * (1 - elapsed) + current <= rate.limit + 1e-9:
        return None
    with contextlib.suppress(ValueError):  # expired meanwhile
        cache.decr(current_key)
    return _wait(rate, previous, current - 1, elapsed)


def _wait(rate: Rate, previous: int, counted: int, elapsed: float) -> float:
    """Seconds until one more request fits: previous·(1 − e) + counted + 1 ≤ limit."""
    if rate.limit <= 0:
        return float(rate.period)
    room = rate.limit - counted - 1
    if room >= 0 and previous > 0:  # later in this window, as the previous window's weight fades
        at = 1 - room / previous
        seconds = (at - elapsed) * rate.period
    else:  # next window, where this window's count becomes the fading one
        at = max(0.0, 1 - (rate.limit - 1) / counted) if counted > 0 else 0.0
        seconds = (1 - elapsed + at) * rate.period
    return float(max(1, math.ceil(round(seconds, 6))))


def describe_wait(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} seconds"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


# --- pages ---------------------------------------------------------------------------------------------

_PAGE = """{% extends "base.html" %}
{% block title %}Too many requests{% endblock %}
{% block content %}
<h1>Too many requests</h1>
<p>{{ message }}</p>
<p><a class="btn" href="{{ back }}">Back</a></p>
{% endblock %}"""


def throttled_page(request: HttpRequest, scope: str, wait: float) -> HttpResponse:
    """A 429 page that says what was limited and when to try again, with a way back."""
    rate = rate_for(scope)
    message = (
        f"You have reached the limit of {rate} for this action. Please try again in {describe_wait(wait)}."
        if rate
        else "Too many requests. Please try again later."
    )
    referer = request.headers.get("referer", "")
    back = referer if url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()}) else "/"
    engine = Engine.get_default()
    try:
        content = engine.from_string(_PAGE).render(RequestContext(request, {"message": message, "back": back}))
    except TemplateDoesNotExist:
        content = engine.from_string("<p>{{ message }}</p>").render(Context({"message": message}))
    response = HttpResponse(content, status=429)
    response["Retry-After"] = str(math.ceil(wait))
    return response


def rate_limited(scope: str, *, methods: Iterable[str] = ("POST",)) -> Callable:
    """Limit a page view by the API's counter for ``scope``; only ``methods`` count (a GET shows the form).

    Put it under ``@login_required`` so anonymous visitors are sent to log in rather than counted.
    """
    rate_for(scope)  # a misspelt scope fails when the view module is imported, not on the first request
    counted = frozenset(method.upper() for method in methods)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in counted:
                wait = hit(scope, request_ident(request))
                if wait is not None:
                    return throttled_page(request, scope, wait)
            return view(request, *args, **kwargs)

        wrapper.rate_limit_scope = scope  # type: ignore[attr-defined]  # (functools.wraps carries it outwards)
        return wrapper

    return decorator
