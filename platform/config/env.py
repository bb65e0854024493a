"""Strict helpers that read settings from environment variables.

A typo in a deployment's environment should stop the process at start-up with a message that names the
variable, not surface later as a surprising default. Every helper therefore refuses values it cannot parse.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, unquote, urlparse


class ImproperlyConfiguredEnv(ValueError):
    """An environment variable holds a value that cannot be used."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a boolean (use one of 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_PATTERN = re.compile(r"^[A-Za-z0-9_\-./:*?\[\]!]{1,120}$")


def env_patterns(name: str, default: list[str]) -> list[str]:
    """Comma-separated fnmatch patterns (``*-v5``, ``CartPole-v?``); a pattern with other characters stops
    start-up, so a typo cannot silently widen or empty what it allows."""
    patterns = env_list(name, default)
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise ImproperlyConfiguredEnv(
                f"{name}: {pattern!r} is not a pattern (letters, digits, _ - . / : and the wildcards * ? [ ] !)"
            )
    return patterns


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name}={value!r} must be one of {sorted(choices)}")
    return value


def database_from_url(url: str, *, sqlite_fallback_name: str) -> dict[str, object]:
    """Turn a DATABASE_URL into a Django DATABASES entry.

    Supported: ``postgres://user:pass@host:port/name`` (also ``postgresql://``) and ``sqlite:///path``.
    An empty URL means the embedded default, SQLite in WAL mode.
    """
    if not url:
        return _sqlite(sqlite_fallback_name)
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db"
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        return _sqlite(path or sqlite_fallback_name)
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ImproperlyConfiguredEnv("DATABASE_URL names no database (postgres://user@host:5432/NAME)")
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ImproperlyConfiguredEnv(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (postgres or sqlite)")


def _sqlite(path: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            # WAL lets readers proceed while one writer writes; IMMEDIATE makes every transaction take the
            # write lock at BEGIN, which serialises the assignment engine's read-then-write transactions
            # (SQLite has no SELECT ... FOR UPDATE).
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
