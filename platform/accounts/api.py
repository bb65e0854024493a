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

from . import lockout, tokens
from .client_ip import client_ip
from .models import ApiToken
from .typing import AuthenticatedRequest


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


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as listed: never its secret (only its prefix)."""

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "project_id", "read_only", "expires_at", "last_used_at", "created_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=tokens.MAX_NAME)
    project = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=64, help_text="A project slug or id."
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Added here, not as a class attribute: a field named read_only would shadow Field.read_only.
        fields["read_only"] = serializers.BooleanField(default=False, help_text="Only GET, HEAD and OPTIONS.")
        return fields


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="The secret: shown this once, never again.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


def _refuse_named_tokens(request: Request) -> None:
    """Tokens are managed with a login session or the account token, not with a named (maybe scoped) token."""
    if isinstance(request.auth, ApiToken):
        raise exceptions.PermissionDenied("API tokens cannot manage API tokens; sign in or use the account token.")


class ApiTokenListView(APIView):
    @extend_schema(responses=ApiTokenSerializer(many=True), summary="Your API tokens (never their secrets)")
    def get(self, request: AuthenticatedRequest) -> Response:
        _refuse_named_tokens(request)
        return Response(ApiTokenSerializer(tokens.tokens_for_user(request.user), many=True).data)

    @extend_schema(
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer},
        summary="Create an API token; the response holds its secret, shown once",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        _refuse_named_tokens(request)
        body = ApiTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project_id = None
        if data.get("project"):
            project_id = tokens.project_id_for(request.user, str(data["project"]))
            if project_id is None:
                raise exceptions.ValidationError({"project": ["no such project"]})
        try:
            token, secret = tokens.token_create(
                user=request.user,
                name=data["name"],
                project_id=project_id,
                read_only=data["read_only"],
                expires_at=data.get("expires_at"),
            )
        except ValueError as error:
            raise exceptions.ValidationError({"non_field_errors": [str(error)]}) from None
        token.token = secret  # type: ignore[attr-defined]  # on this answer only; never stored
        return Response(ApiTokenCreatedSerializer(token).data, status=201)


class ApiTokenDetailView(APIView):
    @extend_schema(responses={204: None}, summary="Revoke one of your API tokens")
    def delete(self, request: AuthenticatedRequest, token_id: int) -> Response:
        _refuse_named_tokens(request)
        if not tokens.token_revoke(user=request.user, token_id=token_id):
            raise exceptions.NotFound("no such token")
        return Response(status=204)
