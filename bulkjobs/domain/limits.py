"""Limits on the fields a job carries, checked at the door.

A job's fields travel in every status message of the job (``JobSubmitted``, each
``JobStatus``), whose size Kafka caps at about 1 MB: a field without a limit could be
accepted and then never reported.
"""

from __future__ import annotations

from typing import Any

from bulkjobs.errors import BadRequest, TooLarge

MAX_DESCRIPTION_CHARS = 4096
# What a job's JobSubmitted may weigh, encoded: its status messages repeat it and add counts,
# errors and parked batches, and must stay under the producers' 1,000,000-byte limit.
MAX_JOB_MESSAGE_BYTES = 256 * 1024


def check_description(value: Any) -> str | None:
    """A job's description (absent is None); 400 when it is not a string or is too long."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("'description' must be a string", field="description")
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise BadRequest(f"'description' is longer than the limit of {MAX_DESCRIPTION_CHARS} characters",
                         field="description", code="field_too_long", limit=MAX_DESCRIPTION_CHARS)
    return value


def check_job_size(encoded_bytes: int) -> None:
    """413 for a job whose fields together are too large to be reported for its whole life."""
    if encoded_bytes > MAX_JOB_MESSAGE_BYTES:
        raise TooLarge(f"the job's fields take {encoded_bytes} bytes, over the limit of {MAX_JOB_MESSAGE_BYTES} bytes",
                       limit=MAX_JOB_MESSAGE_BYTES, code="fields_too_large")


MAX_IDEMPOTENCY_KEY_CHARS = 255


def check_idempotency_key(value: str) -> str:
    """An ``Idempotency-Key`` header's value: 1 to 255 printable ASCII characters (space to
    tilde); 400 ``invalid_idempotency_key`` otherwise."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not all(" " <= char <= "~" for char in value):
        raise BadRequest(f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII "
                         "characters", field="Idempotency-Key", code="invalid_idempotency_key",
                         limit=MAX_IDEMPOTENCY_KEY_CHARS)
    return value
