"""Request-level limits that must hold before any view (or DRF's parsers) reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


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
    """Refuse a body whose declared length is over ``MAX_REQUEST_BYTES`` with a JSON 413, unread.

    Bodies without a declared length (chunked) are still capped by Django's DATA_UPLOAD_MAX_MEMORY_SIZE when
    read; the API's error handler answers those with the same 413.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.MAX_REQUEST_BYTES
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            if not (declared.isascii() and declared.isdigit()) or len(declared) > 15:
                return JsonResponse(
                    {"error": {"code": "invalid", "message": "Content-Length is not a number", "fields": {}}},
                    status=400,
                )
            if int(declared) > limit:
                return _too_large(limit)
        return self.get_response(request)
