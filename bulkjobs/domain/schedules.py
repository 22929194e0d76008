"""Schedules: checking a job's ``schedule`` and finding when a definition's next run is due.

A schedule is ``{"immediately": bool, "cron": str | None, "runs": int | None, "start_date":
ISO 8601 | None}``. ``cron`` has five fields (minute resolution) or six, the sixth being
seconds (croniter's form). Times are compared as UTC datetimes. A definition that missed
several ticks (its scheduler was down) is due once, for the latest of them. A schedule is
accepted only if it will fire at least once: a cron that names no real date (``0 0 31 2 *``)
is refused at the door, since the scheduler could never make a run of it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from croniter import CroniterBadDateError, croniter

from bulkjobs.clock import format_time, parse_time
from bulkjobs.errors import BadRequest, InvalidField, check_known

_KEYS = {"immediately", "cron", "runs", "start_date"}


def check_schedule(raw: Any, now: datetime) -> dict[str, Any]:
    """A request's schedule, checked and normalised; a 400 naming the field for each mistake."""
    if not isinstance(raw, dict):
        raise InvalidField("'schedule' must be an object with immediately, cron, runs and/or start_date",
                           field="schedule")
    check_known(raw, _KEYS, prefix="schedule.")
    if not raw:
        raise BadRequest("'schedule' must be an object with immediately, cron, runs and/or start_date",
                         field="schedule")
    immediately = _immediately(raw.get("immediately", False))
    cron = _cron(raw.get("cron"))
    runs = _runs(raw.get("runs"))
    start_time = _start_time(raw.get("start_date"))
    _check_fires(immediately, cron, start_time, now)
    return {"immediately": immediately, "cron": cron, "runs": runs,
            "start_date": format_time(start_time) if start_time else None}


def _immediately(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidField("'schedule.immediately' must be true or false", field="schedule.immediately")
    return value


def _cron(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not croniter.is_valid(value)):
        raise BadRequest(f"'schedule.cron' is not a valid cron expression: {value!r}", field="schedule.cron",
                         code="invalid_cron")
    return value


def _runs(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise BadRequest("'schedule.runs' must be a positive integer", field="schedule.runs")
    return value


def _start_time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        start_time = parse_time(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):  # not a time, or one that cannot be told in UTC
        start_time = None
    if start_time is None:
        raise BadRequest("'schedule.start_date' must be an ISO 8601 time", field="schedule.start_date")
    return start_time


def _check_fires(immediately: bool, cron: str | None, start_time: datetime | None, now: datetime) -> None:
    """A 400 unless the schedule makes at least one run."""
    if cron is None and start_time is not None and start_time <= now:
        raise BadRequest("'schedule.start_date' is in the past and there is no cron: it would never run",
                         field="schedule.start_date")
    if cron is None and start_time is None and not immediately:
        raise BadRequest("a schedule needs cron, start_date or immediately", field="schedule")
    if cron is not None and first_tick(cron, max(now, start_time or now)) is None:
        raise BadRequest(f"'schedule.cron' {cron!r} never fires" + (" after schedule.start_date" if start_time else ""),
                         field="schedule.cron", code="invalid_cron")


def first_tick(cron: str, after: datetime) -> datetime | None:
    """The first time ``cron`` fires after ``after``, or None if it never does. croniter's
    search is bounded (it gives up after some decades without a match)."""
    try:
        return croniter(cron, after).get_next(datetime)
    except (CroniterBadDateError, ValueError, OverflowError):  # no such date, or past year 9999
        return None


def next_due(schedule: dict[str, Any], *, created_at: str, last_due: str | None, runs_fired: int,
             now: datetime) -> str | None:
    """The schedule time of the run a definition should make now, or None if none is due."""
    runs = schedule.get("runs")
    if runs is not None and runs_fired >= runs:
        return None
    if runs_fired == 0 and last_due is None and schedule.get("immediately"):
        return created_at
    start = parse_time(schedule["start_date"]) if schedule.get("start_date") else None
    cron = schedule.get("cron")
    if cron is None:
        return schedule["start_date"] if runs_fired == 0 and start is not None and start <= now else None
    latest = croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)  # the latest tick <= now
    after = parse_time(last_due) if last_due else parse_time(created_at)
    if latest <= after or (start is not None and latest < start):
        return None
    return format_time(latest)
