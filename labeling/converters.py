"""Bounded path converters: an id in a URL is 1 to 18 ASCII digits, or the route simply does not match (404).

Django's ``<int:...>`` accepts any number of digits, so a 5 000-digit id reached ``int()`` (which refuses more
than 4 300 digits) or the database (which refuses more than 64 bits): a 500 instead of a 404.
"""

from __future__ import annotations

from django.urls import register_converter


class IdConverter:
    """A database id: 1 to 18 ASCII digits (always within a signed 64-bit integer)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int | str) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
