"""Timestamps as bulkjobs writes them: ISO 8601 UTC with milliseconds and a Z."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# The times bulkjobs accepts: a day inside datetime's range at either end, so that any accepted
# time can be shifted to UTC, rounded to the millisecond and stepped from without overflowing.
EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def format_time(moment: datetime) -> str:
    """A moment in bulkjobs' form; strings in this form sort in time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without an offset is taken as UTC);
    ValueError for what is not one, or is outside ``EARLIEST``..``LATEST``."""
    if not isinstance(text, str):
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Compare before converting: an offset can move a time at either end out of datetime's range.
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(f"{text!r} is outside the times bulkjobs accepts ({format_time(EARLIEST)} to "
                         f"{format_time(LATEST)})")
    return moment.astimezone(UTC)


def utc_moment() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def utc_now(ago: timedelta = timedelta(0)) -> str:
    """Now (or ``ago`` before now)."""
    return format_time(datetime.now(UTC) - ago)
