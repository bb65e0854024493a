"""JSON-safe values: numpy scalars and arrays become Python numbers and lists, NaN and ±inf become null.

Metrics may hold NaN (undefined) and numpy types; JSON columns, checkpoint metadata and API responses cannot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Recursively convert mappings (keys to str), lists, tuples and numpy values to JSON types; NaN/inf → None."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
