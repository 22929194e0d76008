"""The one root of every error bulkjobs raises on purpose; the API middleware maps them to HTTP."""

from __future__ import annotations

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


class BadRequest(BulkJobsError):
    status = 400
    code = "bad_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


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


class UnsupportedMediaType(BulkJobsError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(BulkJobsError):
    status = 503
    code = "unavailable"
