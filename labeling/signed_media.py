"""Short-lived signed URLs for clip media, for programs that authenticate by token and have no session.

A URL is ``/media/clips/<id>/<kind>?sig=<token>``. The token is a django.core.signing TimestampSigner
signature whose salt names the purpose, the clip and the kind, so a token for one clip's poster opens nothing
else. The signed value carries the user the URL was made for (0: nobody in particular) and its lifetime in
seconds; when a user is named, the media view also checks that they are still an active member of the
clip's project, so removing someone from a project revokes their outstanding URLs too.

Lifetime: ``settings.MEDIA_URL_MAX_AGE`` seconds (default 3600) unless the caller asks for another.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.urls import reverse

from accounts.models import User

from .models import Clip

SALT = "heronry.media.clip"
KINDS = ("video", "poster")
# A longer `sig` parameter is refused before any cryptography (the real ones are about 60 characters).
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class MediaGrant:
    """What a valid token allows: this clip's media of this kind, for this user (None: no user named)."""

    clip_id: int
    kind: str
    user_id: int | None


def _signer(clip_id: int, kind: str) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"{SALT}:{clip_id}:{kind}")


def default_max_age() -> int:
    return int(getattr(settings, "MEDIA_URL_MAX_AGE", 3600))


def sign_clip_media(clip_id: int, kind: str, *, user_id: int | None = None, max_age: int | None = None) -> str:
    """The ``sig`` token for one clip's media."""
    if kind not in KINDS:
        raise ValueError(f"unknown media kind {kind!r}")
    lifetime = default_max_age() if max_age is None else int(max_age)
    if lifetime <= 0:
        raise ValueError("max_age must be positive")
    return _signer(clip_id, kind).sign(f"{user_id or 0}.{lifetime}")


def signed_clip_url(clip: Clip, kind: str, *, user: User | None = None, max_age: int | None = None) -> str:
    """The clip's media URL (path only; make it absolute with request.build_absolute_uri) with a signature."""
    user_id = user.pk if (user is not None and user.is_authenticated) else None
    token = sign_clip_media(clip.pk, kind, user_id=user_id, max_age=max_age)
    return reverse("clip-media", args=[clip.pk, kind]) + "?" + urlencode({"sig": token})


def verify_clip_media(clip_id: int, kind: str, token: str) -> MediaGrant | None:
    """The grant a token carries, or None if it is malformed, tampered with, for other media, or expired."""
    if kind not in KINDS or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    signer = _signer(clip_id, kind)
    try:
        value = signer.unsign(token)  # signature first: the lifetime read below is then the one we signed
        user_part, _, age_part = value.partition(".")
        if not (user_part.isdigit() and age_part.isdigit() and len(user_part) <= 18 and len(age_part) <= 9):
            return None
        signer.unsign(token, max_age=int(age_part))
    except signing.BadSignature:  # SignatureExpired is a BadSignature
        return None
    user_id = int(user_part)
    return MediaGrant(clip_id=clip_id, kind=kind, user_id=user_id or None)
