"""Clip videos and posters, served only to the project's members.

In development (MEDIA_SERVING=django) the file is streamed by Django with HTTP Range support, which browsers
need to seek in a video. In production (MEDIA_SERVING=x-accel) Django checks membership and hands the file to
nginx with X-Accel-Redirect.
"""

from __future__ import annotations

import mimetypes
import os
import re

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from accounts.typing import AuthenticatedHttpRequest

from .errors import NotFound
from .models import Clip
from .selectors import project_for_member

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


@login_required
def clip_media(request: AuthenticatedHttpRequest, clip_id: int, kind: str) -> HttpResponseBase:
    clip = Clip.objects.select_related("project").filter(pk=clip_id).first()
    if clip is None or kind not in ("video", "poster"):
        raise Http404("no such clip")
    try:
        project_for_member(slug=clip.project.slug, user=request.user)
    except NotFound:
        raise Http404("no such clip") from None
    field = clip.video if kind == "video" else clip.poster
    if not field:
        raise Http404("not rendered yet")
    name = str(field.name)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if settings.MEDIA_SERVING == "x-accel":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_PREFIX + name
        return response
    return ranged_file_response(request, field.path, content_type)


def ranged_file_response(request: HttpRequest, path: str, content_type: str) -> HttpResponseBase:
    try:
        size = os.path.getsize(path)
    except OSError:
        raise Http404("file missing") from None
    header = request.headers.get("Range", "")
    match = _RANGE.match(header.strip()) if header else None
    if not match or (not match.group(1) and not match.group(2)):
        response: HttpResponseBase = FileResponse(open(path, "rb"), content_type=content_type)  # noqa: SIM115
        response["Accept-Ranges"] = "bytes"
        response["Cache-Control"] = "private, max-age=3600"
        return response
    first, last = match.groups()
    if first:
        start, end = int(first), int(last) if last else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    end = min(end, size - 1)
    if start > end or start >= size:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response

    def stream():
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    response = StreamingHttpResponse(stream(), status=206, content_type=content_type)
    response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response
