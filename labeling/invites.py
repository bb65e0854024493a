"""Invite links: an invite's id signed with the site's secret key.

The signature makes a link unforgeable and unguessable without storing a secret per invite, so the members page
can show an open invite's link again; whether a link still works (expiry, single use, revocation) is decided by
the ``Invite`` row it names (``labeling.services.invite_accept``).
"""

from __future__ import annotations

from django.core import signing

from .models import Invite

_SALT = "heronry.labeling.invite"


def invite_token(invite: Invite) -> str:
    return signing.dumps(invite.pk, salt=_SALT)


def invite_id(token: str) -> int | None:
    """The invite id a token names, or None for a token we did not sign (or one too long to be ours)."""
    if len(token) > 200:
        return None
    try:
        value = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
