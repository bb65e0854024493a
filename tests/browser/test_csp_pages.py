"""The site's Content-Security-Policy in a real browser: the watch in conftest.py sees violations, and the pages
outside the app's own templates (the admin, the Swagger UI, the answer history) work under the policy."""

from __future__ import annotations

import pytest

from labeling.models import Judgment
from tests.conftest import PASSWORD, add_fake_clips

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_watch_sees_a_violation(page_for, live_server, annotator):
    page = page_for(annotator, PASSWORD)
    assert page.csp_violations == []
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<div style=\"color: red\">inline</div>')")
    page.wait_for_function("() => true")
    page.wait_for_timeout(200)
    assert any("style-src" in v for v in page.csp_violations), page.csp_violations
    page.csp_violations.clear()  # expected here; any other test with one fails


def test_admin_pages_work_under_the_policy(page_for, live_server, project, researcher):
    add_fake_clips(project, 2)
    page = page_for(researcher, PASSWORD)
    paths = [
        "/admin/",
        "/admin/labeling/project/",
        f"/admin/labeling/project/{project.pk}/change/",
        "/admin/labeling/clip/",
    ]
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    # The admin's own scripts run under the policy: the changelist's "select all" checkbox works.
    page.check("#action-toggle")
    assert page.locator("input.action-select:checked").count() == 2
    # (the admin links no favicon: the browser's own request for /favicon.ico is a 404)
    assert [e for e in page.errors if "404" not in e] == []


def test_swagger_ui_renders_under_the_policy(page_for, live_server, researcher):
    # Needs platform/config/urls.py to serve frontend/swagger_ui.html (drf-spectacular's own has an inline <style>).
    page = page_for(researcher, PASSWORD)
    response = page.goto(f"{live_server.url}/api/v1/docs/")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.status == 200
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)  # the operations were rendered by script
    assert page.errors == []


def test_history_thumbnails_play_on_hover(page_for, live_server, project_with_queries, annotator):
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project_with_queries.slug}/label/")
    query = page.get_attribute("#compare", "data-query-id")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("(q) => document.querySelector('#compare').dataset.queryId !== q", arg=query)
    assert Judgment.objects.filter(annotator=annotator).count() == 1
    page.goto(f"{live_server.url}/projects/{project_with_queries.slug}/history/")
    # The fake clips are not real MP4s: record play()/pause() instead of decoding anything.
    page.evaluate(
        """() => {
        window.__calls = [];
        HTMLMediaElement.prototype.play = function () { window.__calls.push('play'); return Promise.resolve(); };
        HTMLMediaElement.prototype.pause = function () { window.__calls.push('pause'); };
    }"""
    )
    video = page.locator("video[data-hover-play]").first
    video.hover()
    page.mouse.move(0, 0)
    page.wait_for_function("() => window.__calls.length >= 2")
    assert page.evaluate("window.__calls") == ["play", "pause"]
