"""Logins lock out after repeated failures — by username and by client address — on the login page, the admin
login and the API token endpoint alike (django-axes); the address is the socket's or the one our trusted proxies
forwarded, never a header the client wrote."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from accounts.client_ip import client_ip
from accounts.models import Role
from accounts.services import user_create
from tests.conftest import PASSWORD

ENTRY_POINTS = ["login", "admin", "token"]
LIMIT = django_settings.AXES_FAILURE_LIMIT


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def people(db):
    """Two staff researchers (they may use the admin) and an annotator."""
    return {
        name: user_create(username=name, password=PASSWORD, role=role)
        for name, role in [("rita", Role.RESEARCHER), ("sam", Role.RESEARCHER), ("ben", Role.ANNOTATOR)]
    }


def attempt(entry: str, username: str, password: str, ip: str, forwarded: str | None = None) -> str:
    """One login from a fresh browser or program: "ok", "wrong" (refused, counted) or "locked" (429)."""
    extra = {"REMOTE_ADDR": ip}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    credentials = {"username": username, "password": password}
    if entry == "token":
        response = APIClient().post("/api/v1/auth/token/", credentials, format="json", **extra)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "locked_out", response.content
            assert int(response["Retry-After"]) > 0
            return "locked"
        assert response.status_code in (200, 400), response.content
        return "ok" if response.status_code == 200 else "wrong"
    path = "/accounts/login/" if entry == "login" else "/admin/login/?next=/admin/"
    page = Client().post(path, credentials, **extra)
    if page.status_code == 429:
        return "locked"
    assert page.status_code in (200, 302), page.status_code
    return "ok" if page.status_code == 302 else "wrong"


def fail(entry: str, username: str, ip: str, times: int = LIMIT, forwarded: str | None = None) -> list[str]:
    return [attempt(entry, username, "wrong-password", ip, forwarded) for _ in range(times)]


@pytest.mark.parametrize("failing_at", ENTRY_POINTS)
def test_failures_anywhere_lock_the_username_and_the_address_everywhere(people, failing_at):
    results = fail(failing_at, "rita", "10.0.0.1")
    # The last failure is the one that locks: it is already answered with the lock-out.
    assert results == ["wrong"] * (LIMIT - 1) + ["locked"]
    for entry in ENTRY_POINTS:
        assert attempt(entry, "rita", PASSWORD, "10.0.0.2") == "locked", entry  # the username, from anywhere
        assert attempt(entry, "sam", PASSWORD, "10.0.0.1") == "locked", entry  # the address, for anyone
    # Everyone else, elsewhere, logs in as usual.
    for entry in ENTRY_POINTS:
        assert attempt(entry, "sam", PASSWORD, "10.0.0.3") == "ok", entry
    assert attempt("login", "ben", PASSWORD, "10.0.0.4") == "ok"
    assert attempt("token", "ben", PASSWORD, "10.0.0.4") == "ok"


def test_unknown_usernames_count_too(people):
    fail("token", "nobody", "10.0.0.1")
    assert attempt("login", "rita", PASSWORD, "10.0.0.1") == "locked"


def test_a_locked_out_token_request_answers_in_the_api_error_shape(people):
    fail("token", "rita", "10.0.0.1")
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "rita", "password": PASSWORD}, format="json", REMOTE_ADDR="10.0.0.9"
    )
    assert response.status_code == 429
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == "locked_out"
    assert "failed logins" in body["error"]["message"]
    assert int(response["Retry-After"]) == int(django_settings.AXES_COOLOFF_TIME.total_seconds())
    assert "token" not in body


def test_the_login_page_and_admin_answer_429_with_a_message(people):
    fail("login", "rita", "10.0.0.1")
    for path in ("/accounts/login/", "/admin/login/?next=/admin/"):
        response = Client().post(path, {"username": "rita", "password": PASSWORD}, REMOTE_ADDR="10.0.0.2")
        assert response.status_code == 429
        assert b"too many login attempts" in response.content.lower()
        assert "_auth_user_id" not in response.client.session


def test_a_spoofed_forwarded_for_does_not_help_without_proxies(people, settings):
    settings.NUM_PROXIES = 0
    for i in range(LIMIT):
        attempt("login", "rita", "wrong-password", "10.0.0.1", forwarded=f"198.51.100.{i}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}
    for entry in ENTRY_POINTS:
        assert attempt(entry, "sam", PASSWORD, "10.0.0.1", forwarded="203.0.113.77") == "locked", entry


def test_behind_one_proxy_the_address_is_the_one_it_forwarded(people, settings):
    settings.NUM_PROXIES = 1
    proxy = "172.18.0.5"  # every request arrives from nginx
    for i in range(LIMIT):
        # The client wrote the left entry; nginx appended the address it saw.
        attempt("token", "rita", "wrong-password", proxy, forwarded=f"10.9.9.{i}, 203.0.113.7")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    for entry in ENTRY_POINTS:
        assert attempt(entry, "sam", PASSWORD, proxy, forwarded="1.2.3.4, 203.0.113.7") == "locked", entry
    # Another client behind the same proxy is not locked out with the first (the proxy's address is not used).
    assert attempt("login", "sam", PASSWORD, proxy, forwarded="203.0.113.8") == "ok"
    assert attempt("token", "ben", PASSWORD, proxy, forwarded="203.0.113.8") == "ok"


def test_the_lock_out_ends_after_the_cool_off(people):
    fail("login", "rita", "10.0.0.1")
    assert attempt("login", "rita", PASSWORD, "10.0.0.1") == "locked"
    cool_off = django_settings.AXES_COOLOFF_TIME
    for attempt_row in AccessAttempt.objects.all():  # as if the cool-off had passed
        AccessAttempt.objects.filter(pk=attempt_row.pk).update(
            attempt_time=attempt_row.attempt_time - cool_off - timedelta(minutes=1)
        )
    for entry in ENTRY_POINTS:
        assert attempt(entry, "rita", PASSWORD, "10.0.0.1") == "ok", entry


def test_axes_reset_helper_lifts_a_lock_out(people):
    from axes.utils import reset

    fail("token", "rita", "10.0.0.1")
    assert attempt("token", "rita", PASSWORD, "10.0.0.2") == "locked"
    reset(username="rita")
    reset(ip="10.0.0.1")
    reset(ip="10.0.0.2")
    assert attempt("token", "rita", PASSWORD, "10.0.0.2") == "ok"


def test_logging_in_to_ones_own_account_does_not_reset_the_count_against_another(people):
    fail("login", "rita", "10.0.0.1", times=LIMIT - 1)
    assert attempt("login", "ben", PASSWORD, "10.0.0.1") == "ok"  # the attacker's own account, same address
    assert attempt("token", "ben", PASSWORD, "10.0.0.1") == "ok"
    fail("login", "rita", "10.0.0.1", times=1)
    assert attempt("login", "rita", PASSWORD, "10.0.0.2") == "locked"


def test_a_successful_login_forgets_ones_own_failures(people):
    fail("login", "ben", "10.0.0.1", times=LIMIT - 1)
    assert attempt("login", "ben", PASSWORD, "10.0.0.1") == "ok"
    fail("token", "ben", "10.0.0.1", times=LIMIT - 1)
    assert attempt("token", "ben", PASSWORD, "10.0.0.1") == "ok"
    fail("login", "ben", "10.0.0.1", times=LIMIT - 1)
    assert attempt("login", "ben", PASSWORD, "10.0.0.1") == "ok"


# --- the token endpoint's own throttle ------------------------------------------------------------------------


@pytest.fixture
def token_rate(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "token": "3/minute"},
    }


def token_status(ip: str, forwarded: str | None = None) -> int:
    extra = {"REMOTE_ADDR": ip} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {})
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "ben", "password": PASSWORD}, format="json", **extra
    )
    if response.status_code == 429:
        assert response.json()["error"]["code"] == "throttled"
        assert int(response["Retry-After"]) > 0
    return response.status_code


def test_a_spoofed_forwarded_for_does_not_reset_the_token_throttle(people, token_rate, settings):
    settings.NUM_PROXIES = 0
    assert [token_status("10.0.0.1", forwarded=f"198.51.100.{i}") for i in range(4)] == [200, 200, 200, 429]
    assert token_status("10.0.0.2") == 200


def test_behind_one_proxy_the_token_throttle_counts_the_forwarded_address(people, token_rate, settings):
    settings.NUM_PROXIES = 1
    proxy = "172.18.0.5"
    statuses = [token_status(proxy, forwarded=f"198.51.100.{i}, 203.0.113.7") for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert token_status(proxy, forwarded="203.0.113.7, 203.0.113.8") == 200


# --- the client address -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "proxies, remote, forwarded, expected",
    [
        (0, "10.0.0.1", "203.0.113.7", "10.0.0.1"),
        (0, "10.0.0.1", None, "10.0.0.1"),
        (1, "172.18.0.5", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
        (1, "172.18.0.5", "203.0.113.7", "203.0.113.7"),
        (1, "172.18.0.5", None, "172.18.0.5"),  # straight to the app, past the proxy
        (1, "172.18.0.5", "", "172.18.0.5"),
        (1, "172.18.0.5", "6.6.6.6, not-an-address", "172.18.0.5"),  # never hand axes something unparsable
        (2, "172.18.0.5", "6.6.6.6, 203.0.113.7, 10.1.1.1", "203.0.113.7"),
        (2, "172.18.0.5", "203.0.113.7", "203.0.113.7"),
        (1, "172.18.0.5", "6.6.6.6, 2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_ip(settings, proxies, remote, forwarded, expected):
    settings.NUM_PROXIES = proxies
    extra = {"REMOTE_ADDR": remote} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {})
    assert client_ip(RequestFactory().get("/", **extra)) == expected
