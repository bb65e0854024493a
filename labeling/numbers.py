"""How numbers are shown to people: one rule for the dashboard, the clip browser and the admin lists.

Returns and factor totals are floats from a simulator; their last digits are noise (``-4.8e-13`` is zero,
``-1234.56789`` is ``-1235``). Four significant digits, never scientific notation, no ``nan``.
"""

from __future__ import annotations

import math

EMPTY = "—"


def display_number(value: object, digits: int = 4) -> str:
    """``value`` rounded to ``digits`` significant digits (whole numbers keep all theirs); "—" for none or nan."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return EMPTY
    number = float(value)
    if not math.isfinite(number):
        return EMPTY
    if abs(number) < 10 ** -(digits + 2):  # below what the rounding keeps: simulator noise around zero
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    decimals = max(digits - 1 - magnitude, 0)
    text = f"{number:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
