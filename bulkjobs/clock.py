"""Timestamps as bulkjobs writes them: ISO 8601 UTC with milliseconds and a Z."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def utc_now(ago: timedelta = timedelta(0)) -> str:
    """Now (or ``ago`` before now); strings in this form sort in time order."""
    moment = datetime.now(timezone.utc) - ago
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
