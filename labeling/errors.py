"""Errors raised by labeling services; the API and pages turn them into clear 4xx answers."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``code`` is machine-readable, the message is for people, ``status`` the HTTP status."""

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ValidationFailed(ServiceError):
    code = "invalid"
    status = 400


class NotFound(ServiceError):
    code = "not_found"
    status = 404


class Conflict(ServiceError):
    code = "conflict"
    status = 409


class LastResearcher(Conflict):
    code = "last_researcher"


class AlreadyJudged(Conflict):
    code = "already_judged"


class ClientIdReused(Conflict):
    code = "client_id_reused"


class LeaseInvalid(Conflict):
    code = "lease_invalid"


class LeaseExpired(Conflict):
    code = "lease_expired"


class QueryFull(Conflict):
    code = "query_full"


class DatabaseUnavailable(ServiceError):
    """The database connection broke in the middle of the request (a restart, a failover, a killed backend).

    The transaction was rolled back (or, if the connection broke during COMMIT, may have gone through): the
    client should send the same request again; a judgment retried with its client_id is never recorded twice.
    """

    code = "database_unavailable"
    status = 503
