"""Playwright driving Debian's Chromium (`playwright install` cannot download browsers here)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

# Playwright's sync API runs an event loop in this thread; Django's ORM must still be allowed here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run installs Debian's chromium")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Every page runs under the site's Content-Security-Policy; a violation (an inline handler or style, an eval, a
# script from elsewhere) fails the test. The DOM's `securitypolicyviolation` events are reported to Python
# through a binding, and Chromium's console messages about the policy are caught as well.
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  const where = e.sourceFile ? ` at ${e.sourceFile}:${e.lineNumber}` : '';
  window.__heronryCspViolation(
    `${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}${where} on ${document.location.pathname}` +
    (e.sample ? ` (${e.sample})` : '')
  );
}, true);
"""


def watch_csp(context, violations: list[str]) -> None:
    """Collect the CSP violations of every page of a browser context into ``violations``."""
    context.expose_binding("__heronryCspViolation", lambda source, text: violations.append(text))
    context.add_init_script(CSP_LISTENER)

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    context.on("console", on_console)


@pytest.fixture
def csp_violations():
    """The CSP violations seen by the browser contexts of this test; any at the end fails it."""
    violations: list[str] = []
    yield violations
    if violations:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(dict.fromkeys(violations)))


@pytest.fixture
def page_for(browser, live_server, csp_violations):
    """A fresh browser page logged in as the given user; console errors are collected on ``page.errors`` and
    Content-Security-Policy violations on ``page.csp_violations`` (the test fails if there are any)."""
    pages = []

    def open_page(user, password, *, width=1280, height=800):
        context = browser.new_context(viewport={"width": width, "height": height})
        watch_csp(context, csp_violations)
        page = context.new_page()
        page.errors = []
        page.csp_violations = csp_violations
        page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        pages.append(context)
        return page

    yield open_page
    for context in pages:
        context.close()
