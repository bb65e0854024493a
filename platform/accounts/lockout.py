"""Login lock-outs (django-axes) where axes needs help: the token endpoint, and forgetting one's own failures.

axes counts failed logins per username and per client address (settings: AXES_*). Two things it does not do
the way we want:

- Its middleware turns a lock-out into a response only for Django's own request object. DRF hands
  ``authenticate()`` its own Request, so the token view asks ``locked_out(request)`` and answers in the API's
  error shape itself.
- Its AXES_RESET_ON_SUCCESS deletes every failure of the username *and every failure from the address*, so
  anyone with an account could wipe the failures counted against someone else's username from their own address
  by logging in to their own account between guesses. It is off; instead a successful login forgets only the
  failures of that username from that address (``forget_own_failures``).
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.contrib.auth.signals import user_logged_in

from .client_ip import client_ip


def locked_out(request: Any) -> bool:
    """Whether axes refused (or has just locked out) the login attempted with this request."""
    return bool(getattr(request, "axes_locked_out", False))


def cool_off_seconds(request: Any = None) -> int:
    cool_off = get_cool_off(request)
    return int(cool_off.total_seconds()) if cool_off else 0


def forget_failures(*, request: Any, username: str) -> int:
    """Forget the failed logins of ``username`` from this request's address (after a successful login)."""
    deleted, _ = AccessAttempt.objects.filter(username=username, ip_address=client_ip(request) or None).delete()
    return deleted


def forget_own_failures(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """user_logged_in receiver (the login page, the admin login)."""
    if request is not None and user is not None:
        forget_failures(request=request, username=user.get_username())


# Connected on import; accounts.api imports this module, and URLs (hence it) load before any login is handled.
user_logged_in.connect(forget_own_failures, dispatch_uid="accounts.lockout.forget_own_failures")
