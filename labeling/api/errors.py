"""One error shape for the whole API: ``{"error": {"code", "message", "fields"}}`` with a 4xx status."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.errors import DatabaseUnavailable, ServiceError


def error_response(code: str, message: str, http_status: int, fields: dict[str, Any] | None = None) -> Response:
    return Response({"error": {"code": code, "message": message, "fields": fields or {}}}, status=http_status)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error details → ``{"field.sub[0]": ["message", …]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # list serializers report item errors by index
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                out.update(_flatten(item, f"{prefix}[{index}]"))
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


def request_too_large_response() -> Response:
    limit = settings.MAX_REQUEST_BYTES
    return error_response("request_too_large", f"the request body is larger than {limit} bytes", 413)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return error_response(exc.code, exc.message, exc.status, exc.fields)
    if isinstance(exc, RequestDataTooBig):  # a body without (or with a false) Content-Length, read past the cap
        return request_too_large_response()
    if isinstance(exc, SuspiciousOperation):  # e.g. too many form fields: the client's fault, not a 500
        return error_response("invalid", "the request could not be read", 400)
    if isinstance(exc, OperationalError | InterfaceError):  # a restart or failover mid-request: retryable
        return error_response(DatabaseUnavailable.code, "the database connection was lost; please try again", 503)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django report it (500) rather than hide it
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        message = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())[:500]
        response.data = {"error": {"code": "invalid", "message": message or "invalid input", "fields": fields}}
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response
    detail = getattr(exc, "detail", str(exc))
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    response.data = {
        "error": {
            "code": code if isinstance(code, str) else "error",
            "message": str(detail),
            "fields": {},
        }
    }
    return response
