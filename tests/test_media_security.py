"""Media are typed data, never active content; token clients reach them through short-lived signed URLs; pages
carry the site-wide Content-Security-Policy."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from labeling.models import Clip, Membership
from labeling.signed_media import sign_clip_media, signed_clip_url, verify_clip_media
from tests.conftest import add_fake_clips, api_client_for

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


def login(client: Client, user) -> Client:
    client.force_login(user)
    return client


def assert_hardened(response) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"  # django-csp's page policy did not replace it
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def clip(project) -> Clip:
    return add_fake_clips(project, 1)[0]


@pytest.fixture
def member(client, annotator) -> Client:
    return login(client, annotator)


def test_an_html_video_is_served_as_mp4_with_nosniff_and_a_sandbox(member, clip):
    for name in ("evil.html", "evil.mp4"):
        clip.video.save(name, ContentFile(HTML))
        response = member.get(clip.video_url)
        assert response.status_code == 200
        assert response["Content-Type"] == "video/mp4"
        assert_hardened(response)
        assert body(response) == HTML


@pytest.mark.parametrize(("name", "content"), [("evil.svg", SVG), ("evil.html", HTML), ("evil.jpg", SVG)])
def test_a_poster_that_is_not_png_or_jpeg_is_not_served(member, clip, name, content):
    clip.poster.save(name, ContentFile(content))
    assert member.get(clip.poster_url).status_code == 404


def test_posters_are_typed_by_their_bytes(member, clip):
    response = member.get(clip.poster_url)  # the fixture's poster is a JPEG
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert_hardened(response)
    clip.poster.save("poster.jpg", ContentFile(PNG))  # a PNG under a .jpg name
    response = member.get(clip.poster_url)
    assert response["Content-Type"] == "image/png"
    assert body(response) == PNG


def test_ranges(member, clip):
    data = clip.video.open("rb").read()
    size = len(data)
    part = member.get(clip.video_url, HTTP_RANGE="bytes=0-9")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 0-9/{size}" and body(part) == data[:10]
    assert_hardened(part)
    suffix = member.get(clip.video_url, HTTP_RANGE="bytes=-5")
    assert suffix.status_code == 206 and suffix["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    assert body(suffix) == data[-5:]
    tail = member.get(clip.video_url, HTTP_RANGE=f"bytes={size - 3}-")
    assert tail.status_code == 206 and body(tail) == data[-3:]
    clipped = member.get(clip.video_url, HTTP_RANGE=f"bytes=10-{size * 10}")
    assert clipped.status_code == 206 and body(clipped) == data[10:]


@pytest.mark.parametrize(
    "header",
    ["bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=99999-", "bytes=5-2"],
)
def test_overflowing_or_unsatisfiable_ranges_are_416(member, clip, header):
    response = member.get(clip.video_url, HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{clip.video.size}"
    assert_hardened(response)


@pytest.mark.parametrize(
    "header", ["bytes=0-1,4-5", "bytes=-", "bytes=a-b", "items=0-1", "bytes=\u0661-\u0662", "bytes 0-1", "garbage"]
)
def test_multiple_or_malformed_ranges_get_the_whole_file(member, clip, header):
    response = member.get(clip.video_url, HTTP_RANGE=header)
    assert response.status_code == 200
    assert body(response) == clip.video.open("rb").read()
    assert_hardened(response)


def test_x_accel_responses_are_hardened_too(member, clip, settings):
    settings.MEDIA_SERVING = "x-accel"
    response = member.get(clip.video_url)
    assert response.status_code == 200 and response["X-Accel-Redirect"].startswith(settings.MEDIA_ACCEL_PREFIX)
    assert response["Content-Type"] == "video/mp4"
    assert_hardened(response)


def test_token_clients_get_absolute_signed_urls_and_fetch_without_a_session(
    project_with_queries, researcher, annotator
):
    clips = api_client_for(researcher).get(f"/api/v1/projects/{project_with_queries.slug}/clips/")
    assert clips.status_code == 200, clips.content
    first = clips.json()["results"][0]
    for key in ("video_url", "poster_url"):
        url = urlsplit(first[key])
        assert url.scheme == "http" and url.netloc == "testserver" and parse_qs(url.query)["sig"]

    lease = api_client_for(annotator).post(f"/api/v1/projects/{project_with_queries.slug}/queries/next/")
    assert lease.status_code == 200, lease.content
    left = lease.json()["query"]["left"]
    anonymous = Client()
    video = anonymous.get(left["video_url"])
    assert video.status_code == 200 and video["Content-Type"] == "video/mp4"
    assert body(video) == Clip.objects.get(pk=left["id"]).video.open("rb").read()
    assert_hardened(video)
    part = anonymous.get(left["video_url"], HTTP_RANGE="bytes=0-3")
    assert part.status_code == 206 and body(part) == b"\x00\x00\x00\x18"
    poster = anonymous.get(left["poster_url"])
    assert poster.status_code == 200 and poster["Content-Type"] == "image/jpeg"


def signed(clip: Clip, kind: str = "video", **kwargs) -> str:
    return signed_clip_url(clip, kind, **kwargs)


def test_a_tampered_or_foreign_signature_is_404_not_a_login_redirect(clip, annotator):
    anonymous = Client()
    url = signed(clip, user=annotator)
    assert anonymous.get(url).status_code == 200
    path, token = url.split("?sig=")
    token = token.replace("%3A", ":")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    other = add_fake_clips(clip.project, 2)[1]
    for bad in (
        path + "?sig=" + forged,
        path + "?sig=",
        path + "?sig=" + "x" * 5000,
        reverse("clip-media", args=[other.pk, "video"]) + "?sig=" + token,  # another clip's
        reverse("clip-media", args=[clip.pk, "poster"]) + "?sig=" + token,  # another kind
    ):
        response = anonymous.get(bad)
        assert response.status_code == 404, bad
    # The value under the signature cannot be changed either (e.g. a longer lifetime).
    value, _, rest = token.partition(":")
    assert verify_clip_media(clip.pk, "video", value.replace(".3600", ".99999") + ":" + rest) is None


def test_an_expired_signature_is_404(clip, annotator, monkeypatch):
    real = time.time()
    with monkeypatch.context() as past:
        past.setattr(time, "time", lambda: real - 2 * 3600)
        old = signed(clip, user=annotator)  # valid for the default hour, two hours ago
        short = signed(clip, user=annotator, max_age=60)
    with monkeypatch.context() as recent:
        recent.setattr(time, "time", lambda: real - 30)
        fresh_short = signed(clip, user=annotator, max_age=60)
    anonymous = Client()
    assert anonymous.get(old).status_code == 404
    assert anonymous.get(short).status_code == 404
    assert anonymous.get(fresh_short).status_code == 200


def test_the_lifetime_setting(clip, annotator, settings, monkeypatch):
    settings.MEDIA_URL_MAX_AGE = 120
    real = time.time()
    with monkeypatch.context() as past:
        past.setattr(time, "time", lambda: real - 300)
        token = sign_clip_media(clip.pk, "video", user_id=annotator.pk)
    assert verify_clip_media(clip.pk, "video", token) is None
    assert verify_clip_media(clip.pk, "video", sign_clip_media(clip.pk, "video", user_id=annotator.pk)) is not None


def test_a_signed_url_stops_working_when_its_user_leaves_the_project(clip, annotator):
    url = signed(clip, user=annotator)
    assert Client().get(url).status_code == 200
    Membership.objects.filter(project=clip.project, user=annotator).delete()
    assert Client().get(url).status_code == 404


def test_sessions_outsiders_and_anonymous_visitors(client, clip, outsider):
    # No session and no signature: the browser is sent to log in, as before.
    response = client.get(clip.video_url)
    assert response.status_code == 302 and reverse("login") in response["Location"]
    login(client, outsider)
    assert client.get(clip.video_url).status_code == 404
    assert client.get(clip.poster_url).status_code == 404
    assert client.get(reverse("clip-media", args=[clip.pk + 1000, "video"])).status_code == 404
    assert client.get(reverse("clip-media", args=[clip.pk, "script"])).status_code == 404


def test_pages_carry_the_site_csp(client, project_with_queries, annotator):
    for response in (client.get(reverse("login")), login(client, annotator).get(reverse("label", args=["pendulum"]))):
        assert response.status_code == 200
        policy = response["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_templates_have_no_inline_script_handlers_or_styles():
    """The site policy refuses them; the browser tests would see the violations, this names the file."""
    root = Path(__file__).resolve().parent.parent / "frontend" / "templates"
    inline = re.compile(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=|hx-on|hx-vars|javascript:", re.I)
    offenders = [
        f"{path.relative_to(root)}: {match.group(0).strip()}"
        for path in root.rglob("*.html")
        for match in inline.finditer(path.read_text())
    ]
    assert offenders == []
