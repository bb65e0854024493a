"""What the core's JSON-friendly config dataclasses share: one owner for their plumbing.

:class:`~trainer.core.reward.config.RewardModelConfig`, :class:`~trainer.core.policy.config.PolicyConfig` and
:class:`~trainer.core.loop_settings.LoopSettings` are frozen dataclasses stored verbatim as JSON (in checkpoints,
on projects and iterations). :class:`ConfigBase` gives them, once:

- ``to_dict`` (tuples become lists) and ``from_dict`` (unknown keys refused, a wrongly typed value → ValueError),
  ``merged`` (overrides applied over these values) and ``replace``;
- validation through a ``check(ok, message)`` collector: every failed check is reported at once in one ValueError;
- the torch device rule (``cpu``, ``cuda``, ``cuda:<index>`` or ``auto``) and its resolution.

Django-free like the rest of ``trainer/core``; torch is imported only when a device is resolved.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    import torch

# "cpu", "cuda", "cuda:<index>" or "auto": nothing else reaches torch.device.
DEVICE_PATTERN = re.compile(r"cpu|cuda|cuda:[0-9]{1,2}|auto")

Check = Callable[[bool, str], None]


def is_int(value: object) -> bool:
    """An int but not a bool (``true`` in JSON is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool (an int too large for a float is not finite)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_positive_number(value: object) -> bool:
    return is_number(value) and value > 0  # type: ignore[operator]


def is_device(value: object) -> bool:
    return isinstance(value, str) and DEVICE_PATTERN.fullmatch(value) is not None


def device_problem(value: object) -> str:
    return f"device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {value!r}"[:300]


def resolve_device(device: str) -> torch.device:
    """The torch device ``device`` names; ``auto`` means CUDA if available, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config.device={device!r} but CUDA is not available (use 'auto' or 'cpu')")
    return resolved


class ConfigBase:
    """Mixin for a frozen dataclass of JSON values. Subclasses write :meth:`checks` (and may set ``_problem_prefix``
    or override :meth:`_unknown_keys_message`); ``__post_init__`` validates, so no invalid instance exists."""

    #: Put before the joined problems of a failed validation, e.g. "invalid RewardModelConfig: ".
    _problem_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    # --- validation ----------------------------------------------------------------------------
    def checks(self, check: Check) -> None:
        """Call ``check(ok, message)`` once per rule; the failed ones are reported together."""

    def validate(self) -> None:
        """Raise ValueError describing every invalid field at once."""
        problems: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        self.checks(check)
        if problems:
            raise ValueError(self._problem_prefix + "; ".join(problems))

    # --- copies and JSON -----------------------------------------------------------------------
    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated like any new config)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not silently fall back to a
        default), missing keys take their defaults, and a wrongly typed value is a ValueError."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(cls._unknown_keys_message(unknown, sorted(known)))
        try:
            return cls(**data)
        except TypeError as error:  # a wrongly typed value that the checks did not name
            raise ValueError(f"{cls._problem_prefix}{error}"[:300]) from None

    def merged(self, overrides: Mapping[str, Any] | None) -> Self:
        """These values with ``overrides`` applied (nested dicts replace, they don't merge)."""
        return type(self).from_dict({**self.to_dict(), **dict(overrides or {})})

    @classmethod
    def _unknown_keys_message(cls, unknown: list[str], known: list[str]) -> str:
        return f"unknown {cls.__name__} field(s) {unknown}; valid fields are {known}"
