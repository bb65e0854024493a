"""Request types whose ``user`` is known to be logged in (views behind login_required / IsAuthenticated)."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails
from rest_framework.request import Request

from .models import User


class AuthenticatedHttpRequest(HttpRequest):
    user: User
    htmx: HtmxDetails


class AuthenticatedRequest(Request):
    user: User
