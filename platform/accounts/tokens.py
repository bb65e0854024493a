"""Named API tokens: create (the secret shown once), revoke, and the DRF authentication that accepts them.

A secret is ``hry_`` followed by 43 URL-safe characters; only its SHA-256 is stored, with its first characters
as a visible prefix. ``Authorization: Token <secret>`` or ``Authorization: Bearer <secret>``. Secrets without the
prefix are left to DRF's own TokenAuthentication (``/api/v1/auth/token/``), which keeps working.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS

from .models import ApiToken, User

PREFIX = "hry_"
PREFIX_CHARS = 12  # "hry_" and 8 characters of the secret: enough to tell tokens apart, far too few to guess
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token
KEYWORDS = (b"token", b"bearer")
MAX_NAME = 100


# Who knows projects: labeling registers, at start-up, a function (user, slug or id) → the project's id if the user
# is a member of it, else None. accounts imports nothing above it, so it is told rather than asking.
_project_resolver: Callable[[User, str], int | None] | None = None


def project_resolver_set(resolver: Callable[[User, str], int | None]) -> None:
    global _project_resolver
    _project_resolver = resolver


def project_id_for(user: User, project: str) -> int | None:
    """The id of the project (slug or id) the user belongs to; None if there is none they may see."""
    return None if _project_resolver is None else _project_resolver(user, project)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def token_create(
    *,
    user: User,
    name: str,
    project_id: int | None = None,
    read_only: bool = False,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret; the secret is not stored and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"a token needs a name of 1 to {MAX_NAME} characters")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry must be in the future")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=secret[:PREFIX_CHARS],
        key_hash=hash_secret(secret),
        project_id=project_id,
        read_only=read_only,
        expires_at=expires_at,
    )
    return token, secret


def tokens_for_user(user: User) -> Any:
    """The user's tokens that are not revoked (expired ones included, marked by their expiry), newest first."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True)


def token_revoke(*, user: User, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if there is no such (unrevoked) token of theirs."""
    return bool(tokens_for_user(user).filter(pk=token_id).update(revoked_at=timezone.now()))


def token_project_id(auth: object) -> int | None:
    """The project a request's token is limited to (``request.auth``); None for anything else."""
    return auth.project_id if isinstance(auth, ApiToken) else None


class ReadOnlyToken(exceptions.PermissionDenied):
    default_detail = "This token is read-only: only GET, HEAD and OPTIONS are allowed."
    default_code = "read_only_token"


class ApiTokenAuthentication(BaseAuthentication):
    """``Token hry_…`` or ``Bearer hry_…``. Unknown, revoked or expired → 401; a read-only token writing → 403."""

    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[User, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() not in KEYWORDS:
            return None
        try:
            secret = parts[1].decode()
        except UnicodeError:
            return None
        if not secret.startswith(PREFIX):
            return None  # an account token from /api/v1/auth/token/: DRF's TokenAuthentication's business
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_secret(secret)).first()
        now = timezone.now()
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if token.read_only and request.method not in SAFE_METHODS:
            raise ReadOnlyToken()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword
