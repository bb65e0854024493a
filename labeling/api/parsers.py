"""JSON parsing with a depth limit: deeply nested input is a 400, never a RecursionError (500)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def json_depth_ok(text: str, max_depth: int) -> bool:
    """True if no array/object in ``text`` nests deeper than ``max_depth`` (a linear scan, strings skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with a nesting limit, and NaN/Infinity refused (they aren't JSON)."""

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the body is not valid text") from None
        if not json_depth_ok(text, settings.MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error - nested deeper than {settings.MAX_JSON_DEPTH} levels")
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
