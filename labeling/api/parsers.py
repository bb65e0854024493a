"""JSON parsing with bounds: size, nesting depth and finite numbers.

Deeply nested input is a 400, never a RecursionError (500); ``NaN``, ``Infinity`` and numbers that overflow
to infinity (``1e999``) are a 400; a body longer than ``MAX_REQUEST_BYTES`` is a 413 even when it came without
a Content-Length (the middleware refuses declared lengths before anything reads them).
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from labeling.parsing import json_depth_ok, loads_bounded

__all__ = ["BoundedJSONParser", "RequestTooLarge", "json_depth_ok", "loads_bounded"]


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "request_too_large"


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with a size cap, a nesting limit, and NaN/Infinity refused (they aren't JSON)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.MAX_REQUEST_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError("JSON parse error - the body is not valid text") from None
        try:
            return loads_bounded(text)
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
