"""Timestamps: what parse_time accepts, and that any accepted time can be formatted and stepped from."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bulkjobs.clock import EARLIEST, LATEST, format_time, parse_time
from bulkjobs.domain.exports import parse_instant
from bulkjobs.domain.schedules import check_schedule
from bulkjobs.errors import BadRequest

OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.9999",
                "9999-12-31T20:00:00-05:00", "0000-01-01T00:00:00", "10000-01-01T00:00:00", "9999-12-31"]


@pytest.mark.parametrize("text, expected", [
    ("2026-11-30T12:00:00Z", "2026-11-30T12:00:00.000Z"),
    ("2026-11-30T12:00:00+02:00", "2026-11-30T10:00:00.000Z"),
    ("2026-11-30", "2026-11-30T00:00:00.000Z"),
    ("0001-01-02T00:00:00-23:59", "0001-01-02T23:59:00.000Z"),
    ("9999-12-30T23:59:59.999999Z", "9999-12-30T23:59:59.999Z"),
])
def test_times_are_read_as_utc(text: str, expected: str) -> None:
    assert format_time(parse_time(text)) == expected


@pytest.mark.parametrize("text", [*OUT_OF_RANGE, "", "yesterday", "2026-13-01", None, 1700000000])
def test_a_time_that_cannot_be_represented_is_a_value_error(text: object) -> None:
    with pytest.raises(ValueError):
        parse_time(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("moment", [EARLIEST, LATEST])
def test_any_accepted_time_formats_and_steps_without_overflow(moment: object) -> None:
    accepted = parse_time(format_time(moment))  # type: ignore[arg-type]
    for step in (timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(hours=23), -timedelta(hours=23)):
        format_time(accepted + step)


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_an_out_of_range_file_filter_is_400(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_instant(text, "created_from")
    assert err.value.status == 400 and err.value.details["field"] == "created_from"


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_an_out_of_range_schedule_start_is_400(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_schedule({"start_date": text, "cron": "0 * * * *"}, parse_time("2026-11-30T00:00:00Z"))
    assert err.value.status == 400 and err.value.details["field"] == "schedule.start_date"
