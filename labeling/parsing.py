"""Strict parsers for numbers that come from users: path segments, query strings, form fields, JSON values.

Python's own ``int()`` and ``float()`` are too lenient for hostile input: ``int("²")`` fails only after
``"²".isdigit()`` said yes, ``int()`` of more than 4300 digits raises, ``float("1e400")`` is ``inf`` and
``int(inf)`` overflows, ``float("nan")`` compares false with everything. These helpers accept plain ASCII
decimal notation only, refuse non-finite values, enforce a range, and raise :class:`ValidationFailed`
(a 400 that names the field) for everything else.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings

from .errors import ValidationFailed

# Longest integer text accepted: 18 digits always fit in a signed 64-bit database id.
MAX_INT_DIGITS = 18
_INT = re.compile(r"[+-]?[0-9]{1,18}")
# Plain decimal or scientific notation, ASCII only; at most 64 characters.
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_MAX_FLOAT_CHARS = 64


def _fail(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: {message}", fields={name: [message]})


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f"at least {minimum:g}"
    return f"at most {maximum:g}"


def parse_int(value: Any, *, name: str, minimum: int | None = 0, maximum: int | None = 2**63 - 1) -> int:
    """An integer from text (ASCII digits, optional sign, at most 18 digits) or a JSON int, within range."""
    if isinstance(value, bool):
        raise _fail(name, "must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not _INT.fullmatch(text):
            raise _fail(name, f"must be a whole number of at most {MAX_INT_DIGITS} digits")
        number = int(text)
    else:
        raise _fail(name, "must be a whole number")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _fail(name, f"must be {_range_text(minimum, maximum)}")
    return number


def parse_optional_int(
    value: Any, *, name: str, minimum: int | None = 0, maximum: int | None = 2**63 - 1
) -> int | None:
    """Like :func:`parse_int`, but ``None`` and blank text give ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_int(value, name=name, minimum=minimum, maximum=maximum)


def parse_float(value: Any, *, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite float from text (ASCII decimal or scientific notation) or a JSON number, within range."""
    if isinstance(value, bool):
        raise _fail(name, "must be a number")
    if isinstance(value, int | float):
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_FLOAT_CHARS or not _FLOAT.fullmatch(text):
            raise _fail(name, "must be a number")
        number = float(text)
    else:
        raise _fail(name, "must be a number")
    if not math.isfinite(number):
        raise _fail(name, "must be a finite number")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _fail(name, f"must be {_range_text(minimum, maximum)}")
    return number


def json_size_ok(value: Any, *, max_items: int, max_depth: int = 8, max_string: int = 10_000) -> bool:
    """True if a parsed JSON value holds at most ``max_items`` containers, keys and values in all, nests at most
    ``max_depth`` levels, and no string is longer than ``max_string`` characters (an iterative walk)."""
    budget = max_items
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > max_depth:
            return False
        if isinstance(item, str):
            if len(item) > max_string:
                return False
        elif isinstance(item, dict):
            if len(item) > budget:
                return False
            for key, child in item.items():
                if not isinstance(key, str) or len(key) > max_string:
                    return False
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if len(item) > budget:
                return False
            stack.extend((child, depth + 1) for child in item)
    return True


# A JSON string (escapes included) or one bracket; everything else between them is skipped by the scan.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def json_depth_ok(text: str, max_depth: int) -> bool:
    """True if no array/object in ``text`` nests deeper than ``max_depth`` (a linear scan, strings skipped)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range for a number")
    return value


def loads_bounded(text: str | bytes, max_depth: int | None = None) -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_JSON_DEPTH`` (Python's parser would recurse until a
    RecursionError), NaN/Infinity and numbers that overflow to infinity; raises ValueError with a readable
    message for all of these and for malformed JSON."""
    limit = settings.MAX_JSON_DEPTH if max_depth is None else max_depth
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not json_depth_ok(text, limit):
        raise ValueError(f"nested deeper than {limit} levels")
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
