"""Timestamps as bulkjobs writes them: ISO 8601 UTC with milliseconds and a Z."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
