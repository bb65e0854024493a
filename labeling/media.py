"""Clip videos and posters, served only to the project's members or to holders of a signed URL.

Who may fetch (GET and HEAD only; 405 otherwise): a logged-in member of the clip's project (the browser's
session), or anyone presenting a valid, unexpired ``?sig=`` token from labeling/signed_media.py (API clients,
which authenticate by token and have no session). A signed request never redirects to the login page: a bad,
expired or foreign signature answers 404, exactly like a clip that does not exist. An anonymous request without
a signature is sent to the login page.

Media are data, never active content. The content type comes from the stored kind, never from the file's name:
a video is ``video/mp4``; a poster is ``image/png`` or ``image/jpeg`` according to its first bytes, and a poster
that is neither is not served at all (404, as if it had not been rendered). Every response (full, 206, 416,
X-Accel-Redirect) carries ``X-Content-Type-Options: nosniff``, ``Content-Security-Policy: sandbox`` (which
django-csp's middleware leaves alone because the header is already set) and
``Cross-Origin-Resource-Policy: same-origin``.

In development (MEDIA_SERVING=django) the file is streamed by Django with HTTP Range support, which browsers
need to seek in a video. In production (MEDIA_SERVING=x-accel) Django does the checks and hands the file to
nginx with X-Accel-Redirect. With an object store that signs URLs (MEDIA_STORAGE=s3), Django does the same checks
and answers 302 to a presigned URL of the object, valid for MEDIA_URL_MAX_AGE, that makes the store reply with
the type decided here (labeling/storage.py); the store, on its own origin, serves the bytes and the ranges.

Range requests: one ``bytes=first-last`` or ``bytes=-suffix`` range with ASCII digits gives 206; a range that
cannot be satisfied, or a number longer than 18 digits, gives 416 with ``Content-Range: bytes */size``; several
ranges, another unit or anything malformed is ignored (RFC 9110 allows it) and the whole file is sent (200).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.files.storage import Storage
from django.db.models.fields.files import FieldFile
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_safe

from accounts.models import User

from .errors import NotFound
from .models import Clip
from .selectors import project_for_member
from .signed_media import KINDS, verify_clip_media
from .storage import presigned_url

VIDEO_TYPE = "video/mp4"
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
_RANGE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
MAX_RANGE_DIGITS = 18  # 10**18 bytes is an exabyte; longer numbers are refused before int() sees them
_CHUNK = 64 * 1024
MEDIA_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@require_safe
def clip_media(request: HttpRequest, clip_id: int, kind: str) -> HttpResponseBase:
    token = request.GET.get("sig")
    user = request.user
    if token is None and not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    clip = Clip.objects.select_related("project").filter(pk=clip_id).first()
    if clip is None or kind not in KINDS or not _may_fetch(request, clip, kind, token):
        raise Http404("no such clip")
    return serve_media_field(request, clip.video if kind == "video" else clip.poster, kind)


def serve_media_field(request: HttpRequest, field: FieldFile, kind: str) -> HttpResponseBase:
    """A stored video or poster under the media rules above (type from the kind, hardened headers, ranges,
    X-Accel-Redirect or a presigned redirect). The caller has checked who may fetch it; policy videos
    (``frontend.views.policy_media``) are served through here too."""
    if not field:
        raise Http404("not rendered yet")
    content_type = VIDEO_TYPE if kind == "video" else poster_content_type(field)
    if content_type is None:
        raise Http404("not an image")
    redirect = presigned_url(field.storage, str(field.name), content_type=content_type)
    if redirect is not None:
        # The object store serves the bytes (ranges included) on a short-lived URL made for this request only.
        response: HttpResponseBase = HttpResponseRedirect(redirect)
        response["Cache-Control"] = "private, no-store"  # the next visit is checked again
        return _harden(response)
    if settings.MEDIA_SERVING == "x-accel":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_PREFIX + str(field.name)
        return _harden(response)
    return ranged_file_response(request, field.storage, str(field.name), content_type)


def _may_fetch(request: HttpRequest, clip: Clip, kind: str, token: str | None) -> bool:
    """A session member of the clip's project, or a valid signature (for a user who is still a member)."""
    if request.user.is_authenticated and _is_member(clip, request.user):
        return True
    if token is None:
        return False
    grant = verify_clip_media(clip.pk, kind, token)
    if grant is None:
        return False
    if grant.user_id is None:
        return True
    holder = User.objects.filter(pk=grant.user_id, is_active=True).first()
    return holder is not None and _is_member(clip, holder)


def _is_member(clip: Clip, user: User) -> bool:
    try:
        project_for_member(slug=clip.project.slug, user=user)
    except NotFound:
        return False
    return True


def poster_content_type(field: FieldFile) -> str | None:
    """image/png or image/jpeg from the stored file's first bytes; None for anything else (SVG, HTML, …)."""
    try:
        with field.storage.open(str(field.name), "rb") as handle:
            head = handle.read(8)
    except OSError:
        raise Http404("file missing") from None
    for signature, content_type in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return content_type
    return None


def _harden(response: HttpResponseBase) -> HttpResponseBase:
    for name, value in MEDIA_HEADERS.items():
        response[name] = value
    return response


class Unsatisfiable(Exception):
    """The Range header is well formed but names no byte of the file, or a number too long to be one (416)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end), inclusive, for one satisfiable range; None to ignore the header; raises Unsatisfiable."""
    value = header.strip()
    if not value.lower().startswith("bytes="):
        return None  # another unit, or garbage
    match = _RANGE.fullmatch(value[len("bytes=") :].strip())
    if match is None:
        return None  # several ranges, or malformed: send the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if len(first) > MAX_RANGE_DIGITS or len(last) > MAX_RANGE_DIGITS:
        raise Unsatisfiable
    if first:
        start, end = int(first), (int(last) if last else size - 1)
    else:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise Unsatisfiable
        start, end = max(size - length, 0), size - 1
    if start >= size or start > end:
        raise Unsatisfiable
    return start, min(end, size - 1)


def ranged_file_response(request: HttpRequest, storage: Storage, name: str, content_type: str) -> HttpResponseBase:
    """Stream a stored file, whole or one range of it, through the storage API (any backend)."""
    try:
        size = storage.size(name)
    except OSError:  # FileNotFoundError from every storage, S3 included
        raise Http404("file missing") from None
    header = request.headers.get("Range", "")
    response: HttpResponseBase
    try:
        wanted = parse_range(header, size) if header else None
    except Unsatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
    else:
        if wanted is None:
            response = FileResponse(storage.open(name, "rb"), content_type=content_type)
        else:
            start, end = wanted
            response = StreamingHttpResponse(_stream(storage, name, start, end), status=206, content_type=content_type)
            response["Content-Range"] = f"bytes {start}-{end}/{size}"
            response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return _harden(response)


def _stream(storage: Storage, name: str, start: int, end: int) -> Iterator[bytes]:
    with storage.open(name, "rb") as handle:
        handle.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
