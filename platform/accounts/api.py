"""Token authentication for programs: POST /api/v1/auth/token/ {username, password} -> {token}.

Guarded twice: the "token" throttle (per client address) and django-axes' lock-out (per username and per
address, shared with the login page and the admin login). A locked-out request answers 429 in the API's error
shape (code ``locked_out``) with Retry-After, whether or not the password was right.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from . import lockout
from .client_ip import client_ip


class TokenThrottle(AnonRateThrottle):
    """Per client address, as accounts.client_ip finds it (the socket, or the NUM_PROXIES-th forwarded entry)."""

    scope = "token"

    def get_rate(self) -> str | None:  # the rates as they are now, not as they were at import
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)

    def get_ident(self, request: Any) -> str:
        return client_ip(request)


class LoginLockedOut(exceptions.Throttled):
    default_detail = "Too many failed logins for this username or from this address; try again later."
    default_code = "locked_out"

    def __init__(self, wait: float | None = None) -> None:
        super().__init__(wait=wait, code=self.default_code)


class ObtainTokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    @extend_schema(
        request=AuthTokenSerializer,
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
        summary="Exchange a username and password for an API token",
    )
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        valid = serializer.is_valid()
        # axes marks the request it was given (DRF's Request, not Django's, so its middleware never sees it).
        if lockout.locked_out(request):
            raise LoginLockedOut(wait=lockout.cool_off_seconds(request) or None)
        if not valid:
            raise exceptions.ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        lockout.forget_failures(request=request, username=user.get_username())
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
