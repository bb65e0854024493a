"""Request-level limits that must hold before any view (or DRF's parsers) reads the body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_LENGTH_DIGITS = 15
# Routes that take file uploads (by URL name): their bodies may be up to settings.MAX_UPLOAD_BYTES. Their
# non-file fields are still held to DATA_UPLOAD_MAX_MEMORY_SIZE by Django's multipart parser, and the views check
# each file's size again (a chunked body has no Content-Length to check here).
UPLOAD_ROUTES = frozenset({"api-rollouts"})


def body_limit(request: HttpRequest) -> int:
    """The largest body ``request`` may send: MAX_UPLOAD_BYTES on an upload route, else MAX_REQUEST_BYTES."""
    try:
        name = resolve(request.path_info).url_name
    except Resolver404:
        name = None
    return settings.MAX_UPLOAD_BYTES if name in UPLOAD_ROUTES else settings.MAX_REQUEST_BYTES


def _too_large(limit: int) -> JsonResponse:
    return JsonResponse(
        {
            "error": {
                "code": "request_too_large",
                "message": f"the request body is larger than {limit} bytes",
                "fields": {},
            }
        },
        status=413,
    )


class RequestSizeLimitMiddleware:
    """Every request body is at most ``MAX_REQUEST_BYTES`` (``MAX_UPLOAD_BYTES`` on the upload routes,
    ``UPLOAD_ROUTES``); a larger one gets a JSON 413, never a 400 or 500.

    - A declared Content-Length over the cap is refused before anything reads the body.
    - A body that comes without one (chunked, on ASGI) or lies about it is read with Django's cap
      (DATA_UPLOAD_MAX_MEMORY_SIZE) before the CSRF check would read it, and Django's RequestDataTooBig
      becomes the same 413 — also when a view reads the body itself (``process_exception``). DRF's JSON
      parser reads its stream with the same cap (labeling/api/parsers.py).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit(request)
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            if not (declared.isascii() and declared.isdigit()) or len(declared) > _MAX_LENGTH_DIGITS:
                return JsonResponse(
                    {"error": {"code": "invalid", "message": "Content-Length is not a number", "fields": {}}},
                    status=400,
                )
            if int(declared) > limit:
                return _too_large(limit)
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        if request.method not in _METHODS_WITH_BODY:
            return None
        try:
            if request.content_type == "multipart/form-data":
                # Uploads stream to their handlers; read them here only where the CSRF check would anyway.
                if not getattr(view_func, "csrf_exempt", False):
                    request.POST  # noqa: B018
            else:
                request.body  # noqa: B018  (capped read; DRF and form parsing reuse it)
        except RequestDataTooBig:
            return _too_large(settings.MAX_REQUEST_BYTES)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig):
            return _too_large(settings.MAX_REQUEST_BYTES)
        return None
