"""Errors that carry the API's error shape: ``{"error": {"code", "message", "fields"}}`` and the HTTP status."""

from __future__ import annotations

from typing import Any


class HeronryError(Exception):
    """Any error the client raises. ``status`` is the HTTP status (0 when no response came back), ``code`` the
    API's machine-readable code (``invalid``, ``not_found``, ``permission_denied``, ``locked_out`` ...),
    ``fields`` the per-field messages of a validation error."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "error",
        fields: dict[str, list[str]] | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.fields = dict(fields or {})
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status else self.code
        return f"{prefix}: {self.message}"


class TransportError(HeronryError):
    """No usable response: the connection failed or timed out (after the retries allowed)."""


class ApiError(HeronryError):
    """The server answered with an error status."""


class ValidationError(ApiError):
    """400: the request was refused; ``fields`` says which inputs and why."""


class AuthenticationError(ApiError):
    """401: no token, a wrong token, or wrong credentials."""


class PermissionDenied(ApiError):
    """403: you may not do this."""


class NotFound(ApiError):
    """404: no such object, or one you cannot see."""


class Conflict(ApiError):
    """409: the object is not in a state that allows this (e.g. ``not_ready`` weights)."""


class RequestTooLarge(ApiError):
    """413: the body is over the server's limit."""


class RateLimited(ApiError):
    """429: throttled or locked out (``code`` says which); ``retry_after`` in seconds when the server said."""


class ServerError(ApiError):
    """5xx: the server failed or is unavailable (``code`` ``database_unavailable`` etc.)."""


class RunFailed(HeronryError):
    """``wait_for`` saw the run end failed or cancelled; ``run`` is its last state."""

    def __init__(self, message: str, run: dict[str, Any]) -> None:
        super().__init__(message, code=str(run.get("state", "failed")), body=run)
        self.run = run


class WaitTimeout(HeronryError):
    """``wait_for`` gave up before the run finished; ``run`` is its last state."""

    def __init__(self, message: str, run: dict[str, Any]) -> None:
        super().__init__(message, code="timeout", body=run)
        self.run = run


_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: RequestTooLarge,
    429: RateLimited,
}


def error_for(status: int, body: Any, *, retry_after: float | None = None) -> ApiError:
    """The exception for an error response (``body`` is its parsed JSON, or text when it was not JSON)."""
    code, message, fields = "error", f"HTTP {status}", {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        raw_fields = error.get("fields") or {}
        if isinstance(raw_fields, dict):
            fields = {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in raw_fields.items()}
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(message, status=status, code=code, fields=fields, body=body, retry_after=retry_after)
