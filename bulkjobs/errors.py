"""The one root of every error bulkjobs raises on purpose; the API middleware maps them to HTTP."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any


class BulkJobsError(Exception):
    """Base class: carries an HTTP status, a stable code and optional details."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries beside the body."""
        return {}


class BadRequest(BulkJobsError):
    status = 400
    code = "bad_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class UnknownField(BadRequest):
    """A field, query parameter or part the request may not carry: refused rather than ignored,
    so that a typo is never taken for a setting."""

    code = "unknown_field"


class InvalidField(BadRequest):
    """A field of the wrong type."""

    code = "invalid_field"


def check_known(names: Iterable[str], known: Collection[str], what: str = "field", prefix: str = "") -> None:
    """UnknownField naming the first of ``names`` that is not ``known`` (``prefix`` makes the
    name the error gives, e.g. ``params.``)."""
    for name in names:
        if name not in known:
            choices = "one of " + ", ".join(sorted(known)) if known else f"it takes no {what}s"
            raise UnknownField(f"unknown {what} {prefix + name!r}: {choices}", field=prefix + name)


class Unauthorized(BulkJobsError):
    status = 401
    code = "unauthorized"


class NotFound(BulkJobsError):
    status = 404
    code = "not_found"


class Conflict(BulkJobsError):
    status = 409
    code = "conflict"


class TooLarge(BulkJobsError):
    status = 413
    code = "too_large"


class TooManyRequests(BulkJobsError):
    """Try again later: after ``retry_after`` seconds (the Retry-After header)."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, **details: Any) -> None:
        super().__init__(message, code=code, retry_after=retry_after, **details)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UnsupportedMediaType(BulkJobsError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(BulkJobsError):
    status = 503
    code = "unavailable"


class Unprocessable(BulkJobsError):
    """A well-formed request that cannot be done as asked."""

    status = 422
    code = "unprocessable"
