"""Timestamps as bulkjobs writes them: ISO 8601 UTC with milliseconds and a Z."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def format_time(moment: datetime) -> str:
    """A moment in bulkjobs' form; strings in this form sort in time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without an offset is taken as UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def utc_now(ago: timedelta = timedelta(0)) -> str:
    """Now (or ``ago`` before now)."""
    return format_time(datetime.now(timezone.utc) - ago)
