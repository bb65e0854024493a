"""Friendly 404 and 500 pages, and the demo's settings (issue 14, point 7): the demo runs with DEBUG off, so an
unknown address never shows Django's debug page with every route."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

ROOT = Path(__file__).resolve().parent.parent


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


urlpatterns = [path("broken/", broken), path("api/v1/broken/", broken), path("", include("config.urls"))]
handler404 = "frontend.views.page_not_found"
handler500 = "frontend.views.server_error"


@pytest.mark.urls("tests.test_error_pages")
def test_unknown_addresses_and_errors_get_the_sites_own_pages(db, settings, researcher):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(researcher)
    missing = client.get("/no/such/page/")
    html = missing.content.decode()
    assert missing.status_code == 404 and "Page not found" in html and "Your projects" in html
    assert "URLconf" not in html and "admin/r/" not in html  # not the debug page listing every route
    failed = client.get("/broken/")
    assert failed.status_code == 500 and "Something went wrong" in failed.content.decode()
    assert "RuntimeError" not in failed.content.decode()
    anonymous = Client().get("/no/such/page/")
    assert anonymous.status_code == 404 and "Page not found" in anonymous.content.decode()
    # Programs get the API's JSON errors.
    api_missing = client.get("/api/v1/no/such/route/")
    assert api_missing.status_code == 404 and api_missing.json()["error"]["code"] == "not_found"
    api_failed = client.get("/api/v1/broken/")
    assert api_failed.status_code == 500 and api_failed.json()["error"]["code"] == "server_error"


def _settings(**env: str) -> dict[str, object]:
    """DEBUG, DEMO and the security settings as a fresh process sees them with ``env``."""
    unset = {"DEBUG", "DEMO", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k, None) for k in ('DEBUG', 'DEMO', 'SESSION_COOKIE_SECURE', "
        "'SECURE_SSL_REDIRECT', 'WHITENOISE_USE_FINDERS')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": f"platform{os.pathsep}.", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_demo_settings_have_debug_off_over_plain_http():
    demo = _settings(DEMO="true", SECRET_KEY="a-demo-installation-key-" + "x" * 30)
    assert demo == {
        "DEBUG": False,
        "DEMO": True,
        "SESSION_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "WHITENOISE_USE_FINDERS": True,
    }
    production = _settings(DEBUG="false", SECRET_KEY="a-production-key-" + "x" * 40)
    assert production["DEBUG"] is False and production["SESSION_COOKIE_SECURE"] is True
    assert production["SECURE_SSL_REDIRECT"] is True and production["WHITENOISE_USE_FINDERS"] is False
