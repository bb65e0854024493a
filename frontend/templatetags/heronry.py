"""One date format and one number format for every page.

``{{ value|when }}`` renders ``<time datetime="2026-12-07T12:53:00+00:00">7 Dec 2026, 12:53</time>`` in the
site's time zone, so every page shows dates alike and a script (or a test) can read the exact instant.
``{{ value|num }}`` rounds floats to four significant digits and shows "—" for none or nan
(``labeling.numbers.display_number``, which the admin lists use too).
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html

from labeling.numbers import EMPTY, display_number

register = template.Library()

DATE_FORMAT = "j M Y, H:i"


@register.filter
def when(value: datetime | None) -> str:
    if not isinstance(value, datetime):
        return EMPTY
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), date_format(local, DATE_FORMAT))


@register.filter
def num(value: object, digits: int = 4) -> str:
    return display_number(value, digits)
