"""Completion webhooks, the rules: which callback URLs a job may name, the ``callback`` state a
job keeps of its delivery, when the next attempt is due, and when delivery gives up.

A job's callback lives in its ``details`` (``details["callback"]``), so it travels in every
``JobStatus`` (the compacted changelog), is kept by the view's ``details`` column and shows in
the job body as ``callback``: delivery goes on after a restart of any process. The worker's
``streams.webhooks`` sends the attempts; each attempt's outcome comes back to the tracker as a
``callback_attempt`` job event, folded here (``attempted``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bulkjobs.clock import format_time, parse_time
from bulkjobs.domain.jobs import DELETED, TERMINAL, Job
from bulkjobs.errors import BadRequest

MAX_URL_CHARS = 2048
SCHEMES = ("http", "https")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_ERROR_CHARS = 500  # of a failed attempt's reason kept in ``last_error``

INVALID_CALLBACK_URL = "invalid_callback_url"
CALLBACK_URL_NOT_ALLOWED = "callback_url_not_allowed"
WEBHOOK_SECRET_MISSING = "webhook_secret_missing"


def check_callback_url(value: Any) -> str:
    """A job's ``callback_url``: an http(s) URL with a host, at most ``MAX_URL_CHARS`` long;
    400 ``invalid_callback_url`` (``field_too_long`` when too long) otherwise."""
    if not isinstance(value, str):
        raise BadRequest("'callback_url' must be a string: an http or https URL", field="callback_url",
                         code=INVALID_CALLBACK_URL)
    if len(value) > MAX_URL_CHARS:
        raise BadRequest(f"'callback_url' is longer than the limit of {MAX_URL_CHARS} characters",
                         field="callback_url", code="field_too_long", limit=MAX_URL_CHARS)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise BadRequest(f"'callback_url' is not a URL: {exc}", field="callback_url",
                         code=INVALID_CALLBACK_URL) from None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname or port == 0:
        raise BadRequest("'callback_url' must be an http or https URL with a host", field="callback_url",
                         code=INVALID_CALLBACK_URL)
    if any(char.isspace() or not char.isprintable() for char in value):
        raise BadRequest("'callback_url' must not hold spaces or control characters", field="callback_url",
                         code=INVALID_CALLBACK_URL)
    return value


def literal_address(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a URL names literally as its host; None for a host name."""
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return None


def refused_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may not go to ``address`` when private targets are denied: anything not
    globally routable (loopback, private, link-local, shared, reserved...; ``is_global``), and
    an IPv4 address mapped into IPv6 judged as that IPv4 address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def pending_callback(url: str) -> dict[str, Any]:
    """The ``callback`` state of a job that names ``url``, before any attempt."""
    return {"url": url, "status": PENDING, "attempts": 0, "last_attempt_at": None, "last_error": None}


def with_callback(details: dict[str, Any] | None, url: str | None) -> dict[str, Any] | None:
    """A job's details, with a pending callback to ``url`` (unchanged without a URL)."""
    if url is None:
        return details
    return {**(details or {}), "callback": pending_callback(url)}


def callback_of(job: Job) -> dict[str, Any] | None:
    details = job.details or {}
    callback = details.get("callback")
    return callback if isinstance(callback, dict) else None


def delivering(job: Job) -> bool:
    """Whether the job has ended (and is not deleted) with its completion webhook still pending."""
    callback = callback_of(job)
    return (callback is not None and callback.get("status") == PENDING and job.status in TERMINAL
            and job.status != DELETED)


def backoff(attempts: int, initial: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``initial`` doubling, at most ``cap``."""
    if attempts <= 0:
        return 0.0
    return min(cap, initial * 2 ** min(attempts - 1, 64))


def next_attempt_at(job: Job, initial: float, cap: float) -> datetime | None:
    """When the job's next delivery attempt is due; None if there is none to make: no callback,
    the job has not ended (or is deleted), or the callback was delivered or gave up."""
    callback = callback_of(job)
    if callback is None or not delivering(job):
        return None
    attempts = int(callback.get("attempts") or 0)
    last = callback.get("last_attempt_at")
    if attempts == 0 or last is None:
        return parse_time(job.completed_at or job.updated_at or job.created_at or "1970-01-01T00:00:00Z")
    return parse_time(last) + timedelta(seconds=backoff(attempts, initial, cap))


def is_due(job: Job, now: datetime, initial: float, cap: float) -> bool:
    """Whether the job's next delivery attempt is due at ``now``."""
    due = next_attempt_at(job, initial, cap)
    return due is not None and due <= now


def gives_up(job: Job, at: datetime, max_age: float) -> bool:
    """Whether a failed attempt at ``at`` is the last: the job ended ``max_age`` seconds ago or more."""
    ended = parse_time(job.completed_at or job.updated_at or format_time(at))
    return (at - ended).total_seconds() >= max_age


def attempted(job: Job, attempt: int, at: str, error: str | None, gave_up: bool) -> Job | None:
    """Fold delivery attempt number ``attempt`` (from 1) into the job's callback: delivered
    (``error`` None), or still pending with its reason, or failed for good (``gave_up``). None
    if the callback is not pending or the attempt was counted already (a redelivered event)."""
    callback = callback_of(job)
    if callback is None or callback.get("status") != PENDING or attempt != int(callback.get("attempts") or 0) + 1:
        return None
    status = DELIVERED if error is None else FAILED if gave_up else PENDING
    changed = {**callback, "status": status, "attempts": attempt,
               "last_attempt_at": at, "last_error": error[:MAX_ERROR_CHARS] if error is not None else None}
    return replace(job, details={**(job.details or {}), "callback": changed})


def event_type(job: Job) -> str:
    """The webhook's ``type``: ``job.<status>``."""
    return f"job.{job.status}"


def webhook_id(job: Job) -> str:
    """The ``webhook-id``: the same for every attempt of one event, so receivers can dedupe."""
    return f"{job.id}.{job.status}"
