"""The job state machine's commands (suspend, resume, cancel, update, fire) and schedules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import (
    ALLOWED,
    CANCELLED,
    PROCESSING,
    QUEUED,
    SCHEDULED,
    STATUSES,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL,
    Job,
    allowed,
)
from bulkjobs.domain.schedules import check_schedule, next_due
from bulkjobs.errors import BadRequest

T0, T1, T2, T3 = (f"2026-01-01T00:00:0{i}.000Z" for i in range(4))
NOW = datetime(2026, 1, 1, 0, 10, 0, tzinfo=UTC)


def job(status: str = QUEUED, **values: Any) -> Job:
    return Job(**{"id": "j1", "tenant": "acme", "type": "resources", "action": "post", "total": 4, "batches": 2,
                  "status": status, "created_at": T0, **values})


COMMANDS = ("suspend", "resume", "cancel", "update", "delete")
EXPECTED = {
    QUEUED: {"suspend", "cancel", "update"},
    PROCESSING: {"suspend", "cancel"},
    SUSPENDED: {"resume", "cancel", "update"},
    SCHEDULED: {"suspend", "cancel", "update"},
    **{status: {"delete"} for status in STATUSES if status in TERMINAL},
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("command", COMMANDS)
def test_the_table_of_allowed_commands(status: str, command: str) -> None:
    assert allowed(status, False, command) == (command in EXPECTED[status])
    assert set(ALLOWED) == set(STATUSES)


def test_update_needs_a_job_that_has_not_started() -> None:
    assert allowed(QUEUED, False, "update") and not allowed(QUEUED, True, "update")
    assert job(started_at=T1).started and job(SCHEDULED, runs_fired=1).started and not job().started


@pytest.mark.parametrize("status, expected", [(QUEUED, SUSPENDED), (PROCESSING, SUSPENDED), (SCHEDULED, SUSPENDED),
                                              (SUSPENDED, None), (SUCCEEDED, None), (CANCELLED, None)])
def test_suspend(status: str, expected: str | None) -> None:
    after = jobs.suspended(job(status), T1)
    assert (after.status if after else None) == expected


def test_resume_goes_back_where_it_was_and_lets_go_of_held_batches() -> None:
    held = job(SUSPENDED, parked=[[0, 5], [3, 9]])
    queued = jobs.resumed(held, T1)
    assert queued and queued.status == QUEUED and queued.parked == []
    assert jobs.released_batches(held, queued) == [[0, 5], [3, 9]]
    running = jobs.resumed(job(SUSPENDED, started_at=T0), T1)
    assert running and running.status == PROCESSING
    definition = job(SUSPENDED, schedule={"cron": "* * * * *"}, parked=[[1, 1]])
    scheduled = jobs.resumed(definition, T1)
    assert scheduled and scheduled.status == SCHEDULED and scheduled.parked == [[1, 1]]
    assert jobs.released_batches(definition, scheduled) == []
    assert jobs.resumed(job(PROCESSING), T1) is None


def test_cancel_drops_held_batches_and_sends_none() -> None:
    held = job(SUSPENDED, parked=[[0, 5]])
    after = jobs.cancelled(held, T1)
    assert after and after.status == CANCELLED and after.parked == [] and after.completed_at == T1
    assert jobs.released_batches(held, after) == []
    assert jobs.cancelled(job(SUCCEEDED), T1) is None


def test_parked_batches_are_kept_once() -> None:
    held = jobs.parked(job(SUSPENDED), 2, 40)
    assert held and held.parked == [[2, 40]]
    assert jobs.parked(held, 2, 40) is None
    assert jobs.parked(job(CANCELLED), 2, 41) is None


def test_a_suspended_job_still_counts_batches_applied_before_and_can_finish() -> None:
    after = jobs.batch_done(job(SUSPENDED, batches=1), 0, Counts(processed=4, created=4), T1)
    assert after and after.status == SUCCEEDED


def test_update_changes_what_it_may() -> None:
    after = jobs.updated(job(SCHEDULED, schedule={"cron": "* * * * *"}), {"description": "d", "suspended": True}, T1)
    assert after and (after.description, after.status) == ("d", SUSPENDED)
    back = jobs.updated(after, {"suspended": False}, T2)
    assert back and back.status == SCHEDULED
    assert jobs.updated(job(started_at=T1), {"description": "late"}, T2) is None


def test_a_definition_fires_once_per_due_time_and_ends_after_its_runs() -> None:
    definition = job(SCHEDULED, schedule={"cron": "* * * * * *", "runs": 2})
    first = jobs.fired(definition, T1, T1)
    assert first and (first.runs_fired, first.last_due, first.status) == (1, T1, SCHEDULED)
    assert jobs.fired(first, T1, T2) is None  # the same tick again
    assert jobs.fired(first, T0, T2) is None  # an older tick
    second = jobs.fired(first, T2, T2)
    assert second and (second.runs_fired, second.status, second.completed_at) == (2, SUCCEEDED, T2)
    assert jobs.fired(jobs.suspended(first, T1) or first, T3, T3) is None


def test_a_definition_is_submitted_scheduled_and_does_not_finish_on_its_batches() -> None:
    definition = jobs.submitted(Job("d"), tenant="acme", type="resources", action="post", description=None,
                                total=4, batches=0, created_at=T0, schedule={"cron": "* * * * *"})
    assert definition.status == SCHEDULED and definition.holds_batches


def test_export_progress_and_done() -> None:
    export = jobs.submitted(Job("e"), tenant="acme", type=jobs.EXPORT, action=jobs.EXPORT, description=None,
                            total=None, batches=0, created_at=T0)
    assert export.status == QUEUED  # no batches does not mean done for an export
    running = jobs.export_progress(export, 500, 2000, T1)
    assert running and (running.status, running.progress, running.total) == (PROCESSING, 25, 2000)
    files = [{"name": "e-1.jsonl", "size": 10, "records": 2000, "created_at": T2}]
    done = jobs.export_done(running, 2000, files, T2)
    assert done and done.status == SUCCEEDED and done.details == {"files": files} and done.progress == 100
    fewer = jobs.files_deleted(done, ["e-1.jsonl"], T3)
    assert fewer and fewer.details == {"files": []}
    assert jobs.files_deleted(fewer, ["e-1.jsonl"], T3) is None


@pytest.mark.parametrize("schedule, field", [
    ("daily", "schedule"), ({}, "schedule"), ({"every": 5}, "schedule.every"),
    ({"cron": "every day"}, "schedule.cron"), ({"cron": 5}, "schedule.cron"),
    ({"runs": 0, "cron": "* * * * *"}, "schedule.runs"), ({"runs": True, "cron": "* * * * *"}, "schedule.runs"),
    ({"immediately": 1}, "schedule.immediately"),
    ({"start_date": "yesterday"}, "schedule.start_date"),
    ({"start_date": "2025-12-31T00:00:00Z"}, "schedule.start_date"),
])
def test_bad_schedules_are_400(schedule: Any, field: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_schedule(schedule, NOW)
    assert err.value.details["field"] == field


@pytest.mark.parametrize("schedule", [
    {"cron": "0 0 31 2 *"}, {"cron": "0 0 30 2 * 0"}, {"cron": "* * 31 2 *", "immediately": True},
    {"cron": "0 0 1 1 * 0 2020"}, {"cron": "0 0 1 1 * 0 2027", "start_date": "2027-06-01T00:00:00Z"},
])
def test_a_cron_that_never_fires_is_refused(schedule: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as err:
        check_schedule(schedule, NOW)
    assert (err.value.code, err.value.details["field"]) == ("invalid_cron", "schedule.cron")
    assert "never fires" in err.value.message


def test_a_start_date_out_of_range_is_400() -> None:
    with pytest.raises(BadRequest) as err:
        check_schedule({"cron": "* * * * *", "start_date": "0001-01-01T00:00:00+01:00"}, NOW)
    assert err.value.details["field"] == "schedule.start_date"


def test_a_cron_that_fires_rarely_is_fine() -> None:
    assert check_schedule({"cron": "0 0 29 2 *"}, NOW)["cron"] == "0 0 29 2 *"


def test_a_past_start_date_is_fine_with_a_cron() -> None:
    checked = check_schedule({"cron": "*/5 * * * *", "start_date": "2025-12-31T00:00:00+01:00"}, NOW)
    assert checked == {"immediately": False, "cron": "*/5 * * * *", "runs": None,
                       "start_date": "2025-12-30T23:00:00.000Z"}


def due(schedule: dict[str, Any], *, last_due: str | None = None, runs_fired: int = 0,
        now: datetime = NOW, created_at: str = "2026-01-01T00:00:30.000Z") -> str | None:
    return next_due(check_schedule(schedule, datetime(2025, 1, 1, tzinfo=UTC)), created_at=created_at,
                    last_due=last_due, runs_fired=runs_fired, now=now)


def test_next_due() -> None:
    five = {"cron": "*/5 * * * *"}
    assert due(five) == "2026-01-01T00:10:00.000Z"  # 00:05 was missed too: only the latest fires
    assert due(five, last_due="2026-01-01T00:10:00.000Z", runs_fired=1) is None
    assert due({**five, "runs": 1}, last_due="2026-01-01T00:05:00.000Z", runs_fired=1) is None
    assert due({**five, "immediately": True}) == "2026-01-01T00:00:30.000Z"
    assert due({**five, "start_date": "2026-01-01T00:11:00Z"}) is None
    assert due({"start_date": "2026-01-01T00:09:00Z"}) == "2026-01-01T00:09:00.000Z"
    assert due({"start_date": "2026-01-01T00:09:00Z"}, runs_fired=1, last_due="x") is None
    assert due({"start_date": "2026-01-01T00:11:00Z"}) is None
    assert due({"cron": "* * * * * */2"}, last_due="2026-01-01T00:09:58.000Z", runs_fired=1) == \
        "2026-01-01T00:10:00.000Z"


@pytest.mark.parametrize("command, changes, meaning", [
    ("cancel", None, jobs.STOP),
    ("delete", None, None),  # refused while the job runs; a job that ended has stopped its batches
    ("suspend", None, jobs.HOLD),
    ("resume", None, jobs.GO_ON),
    ("update", {"suspended": False}, jobs.GO_ON),
    ("update", {"suspended": True}, None),  # refused once the job has started: left to the tracker
    ("update", {"description": "x"}, None),
    ("fail", None, None),
    ("fire", None, None),
    ("delete_files", {"names": ["a-1.csv"]}, None),
])
def test_what_a_command_tells_the_batch_appliers_at_once(command: str, changes: dict[str, Any] | None,
                                                         meaning: str | None) -> None:
    assert jobs.notice(command, changes) == meaning


@pytest.mark.parametrize("status", [*STATUSES, jobs.DELETED])
def test_a_cancel_or_suspend_the_tracker_refuses_leaves_nothing_to_apply(status: str) -> None:
    """Why appliers may act on a cancel or a suspend before the tracker: it refuses them only
    for a job that has ended or is suspended already."""
    for command in ("cancel", "suspend"):
        for started in (False, True):
            if not allowed(status, started, command):
                assert status in TERMINAL or status == SUSPENDED
