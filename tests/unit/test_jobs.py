"""The job state machine: submitted, batch_done, cancelled and deleted, the counts, and when a finished job expires."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from bulkjobs.clock import parse_time
from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts, progress
from bulkjobs.domain.jobs import (
    CANCELLED,
    DELETED,
    FAILED,
    PARTIALLY_SUCCEEDED,
    PROCESSING,
    QUEUED,
    SUCCEEDED,
    Job,
    batch_done,
    cancelled,
    deleted,
    failed,
    submitted,
    visible_status,
)
from bulkjobs.settings import Settings

T0, T1, T2, T3, T4 = (f"2024-05-01T12:00:0{i}Z" for i in range(5))


def submit(job: Job, *, total: int, batches: int, at: str = T0) -> Job:
    return submitted(job, tenant="tenant-a", type="resources", action="post", description="load",
                     total=total, batches=batches, created_at=at)


def batch(processed: int, failed: int = 0) -> Counts:
    return Counts(processed=processed, created=processed - failed, failed=failed)


def done(job: Job, seq: int, counts: Counts, at: str) -> Job:
    """batch_done that must count."""
    after = batch_done(job, seq, counts, at)
    assert after is not None
    return after


def test_a_new_job_is_queued() -> None:
    job = Job("j1")
    assert (job.status, job.total, job.progress, job.terminal) == (QUEUED, None, 0, False)


def test_submitted_learns_the_totals_and_stays_queued() -> None:
    job = submit(Job("j1"), total=6, batches=3)

    assert (job.tenant, job.type, job.action, job.description) == ("tenant-a", "resources", "post", "load")
    assert (job.total, job.batches, job.status) == (6, 3, QUEUED)
    assert (job.created_at, job.updated_at, job.started_at, job.completed_at) == (T0, T0, None, None)


@pytest.mark.parametrize("failed_per_batch, status", [
    pytest.param([0, 0, 0], SUCCEEDED, id="none-failed"),
    pytest.param([0, 1, 2], PARTIALLY_SUCCEEDED, id="some-failed"),
    pytest.param([1, 1, 1], PARTIALLY_SUCCEEDED, id="one-short-of-all"),
    pytest.param([2, 2, 2], FAILED, id="all-failed"),
])
def test_the_last_batch_decides_the_outcome(failed_per_batch: list[int], status: str) -> None:
    job = submit(Job("j1"), total=6, batches=3)
    times = [T1, T2, T3]

    for seq, (failed_here, at) in enumerate(zip(failed_per_batch, times, strict=True)):
        assert job.status in (QUEUED, PROCESSING)
        job = done(job, seq, batch(2, failed_here), at)
        if seq < 2:
            assert job.status == PROCESSING and job.completed_at is None
            assert job.progress == (seq + 1) * 2 * 100 // 6

    assert job.status == status
    assert job.terminal
    assert job.counts == Counts(processed=6, created=6 - sum(failed_per_batch), failed=sum(failed_per_batch))
    assert (job.started_at, job.completed_at, job.updated_at) == (T1, T3, T3)
    assert job.progress == 100
    if status == FAILED:
        assert job.error is not None and job.error["code"] == "all_records_failed"
        assert "6" in job.error["message"]
    else:
        assert job.error is None


def test_batches_may_finish_in_any_order() -> None:
    job = submit(Job("j1"), total=3, batches=3)
    job = done(job, 2, batch(1), T1)
    job = done(job, 0, batch(1), T2)
    assert job.status == PROCESSING
    job = done(job, 1, batch(1), T3)
    assert job.status == SUCCEEDED


def test_batches_counted_before_submitted_wait_for_the_totals() -> None:
    job = done(Job("j1"), 0, batch(2), T1)
    assert (job.status, job.total, job.batches, job.progress) == (PROCESSING, None, None, 0)
    assert job.started_at == T1
    job = done(job, 1, batch(2, failed=1), T2)
    assert job.status == PROCESSING

    job = submit(job, total=4, batches=2, at=T0)

    assert job.status == PARTIALLY_SUCCEEDED
    assert (job.total, job.counts.processed, job.progress) == (4, 4, 100)


def test_submitted_with_batches_still_missing_keeps_processing() -> None:
    job = done(Job("j1"), 0, batch(2), T1)
    job = submit(job, total=4, batches=2, at=T0)
    assert job.status == PROCESSING and job.progress == 50
    job = done(job, 1, batch(2), T2)
    assert job.status == SUCCEEDED


def test_a_job_finished_by_a_late_submitted_does_not_complete_before_it_started() -> None:
    job = done(Job("j1"), 0, batch(2), T2)
    job = submit(job, total=2, batches=1, at=T1)  # the API stamps created_at before publishing

    assert job.status == SUCCEEDED
    assert job.completed_at >= job.started_at
    assert job.updated_at >= T2


def test_a_redelivered_batch_is_counted_once() -> None:
    job = submit(Job("j1"), total=4, batches=2)
    job = done(job, 0, batch(2), T1)

    assert batch_done(job, 0, batch(2), T2) is None
    assert job.counts.processed == 2

    job = done(job, 1, batch(2), T3)
    assert job.status == SUCCEEDED
    assert batch_done(job, 1, batch(2), T4) is None
    assert batch_done(job, 0, batch(2), T4) is None
    assert job.counts == Counts(processed=4, created=4)


def test_a_batch_counted_before_submitted_is_not_counted_again() -> None:
    job = done(Job("j1"), 0, batch(3), T1)
    job = submit(job, total=3, batches=1)
    assert batch_done(job, 0, batch(3), T2) is None
    assert job.counts.processed == 3


def test_high_sequence_numbers_are_kept_apart() -> None:
    job = submit(Job("j1"), total=200, batches=200)
    for seq in (0, 63, 64, 199):
        job = done(job, seq, batch(1), T1)
    for seq in (0, 63, 64, 199):
        assert batch_done(job, seq, batch(1), T2) is None
    job = done(job, 128, batch(1), T2)
    assert job.counts.processed == 5 and job.status == PROCESSING


# --- cancel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    pytest.param(lambda: Job("j1"), id="queued-before-submitted"),
    pytest.param(lambda: submit(Job("j1"), total=4, batches=2), id="queued"),
    pytest.param(lambda: done(submit(Job("j1"), total=4, batches=2), 0, batch(2), T1), id="processing"),
])
def test_a_running_job_can_be_cancelled(make) -> None:
    job = cancelled(make(), T2)
    assert job is not None
    assert (job.status, job.completed_at, job.updated_at) == (CANCELLED, T2, T2)
    assert job.terminal


def finished(failed: int) -> Job:
    return done(submit(Job("j1"), total=2, batches=1), 0, batch(2, failed), T1)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: finished(0), id="succeeded"),
    pytest.param(lambda: finished(1), id="partially-succeeded"),
    pytest.param(lambda: finished(2), id="failed"),
    pytest.param(lambda: cancelled(Job("j1"), T1), id="cancelled"),
    pytest.param(lambda: deleted(finished(0), T2), id="deleted"),
])
def test_a_finished_job_cannot_be_cancelled(make) -> None:
    job = make()
    assert job.terminal
    assert cancelled(job, T3) is None


def test_counts_keep_adding_after_cancel_but_the_status_stays() -> None:
    job = done(submit(Job("j1"), total=6, batches=3), 0, batch(2), T1)
    job = cancelled(job, T2)

    job = done(job, 1, batch(2, failed=2), T3)
    job = done(job, 2, batch(2, failed=2), T4)

    assert job.status == CANCELLED
    assert job.counts == Counts(processed=6, created=2, failed=4)
    assert (job.completed_at, job.updated_at, job.error) == (T2, T4, None)
    assert batch_done(job, 2, batch(2), T4) is None


def test_submitted_after_cancel_keeps_the_job_cancelled() -> None:
    job = cancelled(Job("j1"), T1)
    job = done(job, 0, batch(1), T2)
    job = submit(job, total=1, batches=1, at=T0)
    assert job.status == CANCELLED and job.total == 1


# --- delete -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    pytest.param(lambda: finished(0), id="succeeded"),
    pytest.param(lambda: finished(1), id="partially-succeeded"),
    pytest.param(lambda: finished(2), id="failed"),
    pytest.param(lambda: cancelled(Job("j1"), T1), id="cancelled"),
])
def test_a_finished_job_can_be_deleted(make) -> None:
    job = deleted(make(), T3)
    assert job is not None
    assert (job.status, job.updated_at) == (DELETED, T3)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: Job("j1"), id="new"),
    pytest.param(lambda: submit(Job("j1"), total=4, batches=2), id="queued"),
    pytest.param(lambda: done(submit(Job("j1"), total=4, batches=2), 0, batch(2), T1), id="processing"),
    pytest.param(lambda: deleted(finished(0), T2), id="already-deleted"),
])
def test_a_running_or_deleted_job_cannot_be_deleted(make) -> None:
    assert deleted(make(), T3) is None


def test_a_deleted_job_ignores_later_events() -> None:
    job = deleted(cancelled(submit(Job("j1"), total=4, batches=2), T1), T2)
    assert batch_done(job, 0, batch(2), T3) is None
    assert submit(job, total=4, batches=2, at=T3) == job


# --- serialisation and views ------------------------------------------------------------------

def test_to_dict_from_dict_round_trip_through_json() -> None:
    job = submit(Job("j1"), total=300, batches=100)
    for seq in (0, 7, 63, 64, 99):
        job = done(job, seq, batch(3, failed=1), T1)
    job = cancelled(job, T2)

    data = orjson.loads(orjson.dumps(job.to_dict()))

    assert Job.from_dict(data) == job
    assert data["counts"] == {"processed": 15, "created": 10, "updated": 0, "deleted": 0, "skipped": 0, "failed": 5}
    assert int(data["done"], 16) == (1 << 0) | (1 << 7) | (1 << 63) | (1 << 64) | (1 << 99)


def test_from_dict_of_a_fresh_job() -> None:
    assert Job.from_dict(Job("j1").to_dict()) == Job("j1")
    assert Job.from_dict({"id": "j1", "done": "", "counts": None}) == Job("j1")


def test_finished_job_round_trips_with_error() -> None:
    job = finished(2)
    assert Job.from_dict(job.to_dict()) == job
    assert job.to_dict()["error"]["code"] == "all_records_failed"


@pytest.mark.parametrize("status, processed, stored, shown", [
    (QUEUED, 0, 0, QUEUED),
    (PROCESSING, 10, 3, PROCESSING),
    (SUCCEEDED, 10, 9, PROCESSING),
    (SUCCEEDED, 10, 10, SUCCEEDED),
    (PARTIALLY_SUCCEEDED, 10, 0, PROCESSING),
    (PARTIALLY_SUCCEEDED, 10, 10, PARTIALLY_SUCCEEDED),
    (FAILED, 10, 9, PROCESSING),
    (FAILED, 10, 12, FAILED),
    (CANCELLED, 10, 0, CANCELLED),
])
def test_visible_status_waits_for_the_results(status: str, processed: int, stored: int, shown: str) -> None:
    assert visible_status(status, processed, stored) == shown


def test_statuses_and_terminal_sets() -> None:
    assert set(jobs.STATUSES) == {QUEUED, PROCESSING, SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED,
                                  jobs.SUSPENDED, jobs.SCHEDULED}
    assert jobs.TERMINAL == {SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, DELETED}


# --- counts -----------------------------------------------------------------------------------

def test_counts_add_field_by_field() -> None:
    a = Counts(processed=3, created=1, updated=1, deleted=0, failed=1)
    b = Counts(processed=2, created=0, updated=0, deleted=2, failed=0)
    assert a + b == Counts(processed=5, created=1, updated=1, deleted=2, failed=1)
    assert a + Counts() == a


def test_counts_dict_round_trip() -> None:
    counts = Counts(processed=5, created=1, updated=1, deleted=2, failed=1)
    assert Counts.from_dict(counts.to_dict()) == counts
    assert Counts.from_dict({"processed": "4", "extra": 9}) == Counts(processed=4)
    assert Counts.from_dict({}) == Counts()


@pytest.mark.parametrize("processed, total, percent", [
    (0, None, 0),
    (5, None, 0),
    (5, 0, 0),
    (0, 3, 0),
    (1, 3, 33),
    (2, 3, 66),
    (3, 3, 100),
    (999, 1000, 99),
    (7, 3, 100),
])
def test_progress_is_whole_percent_capped_at_100(processed: int, total: int | None, percent: int) -> None:
    assert progress(processed, total) == percent


def test_failed_ends_a_running_job_with_the_reason_and_not_a_finished_one() -> None:
    job = submit(Job("j9"), total=2, batches=2, at=T1)

    ended = failed(job, T2, "could not write")

    assert ended is not None and ended.status == FAILED and ended.terminal
    assert ended.error == {"code": "job_failed", "message": "could not write"}
    assert ended.completed_at == T2
    assert failed(ended, T2, "again") is None


def test_the_public_body_puts_a_csv_jobs_details_at_the_top() -> None:
    details = {"job_type": "objects", "operation": "upsert", "file": {"name": "a.csv", "rows": 2}}
    job = submitted(Job("j1"), tenant="tenant-a", type="resources", action="external_id_set", description=None,
                    total=2, batches=1, created_at=T0, details=details)
    job = done(job, 0, Counts(processed=2, created=1, skipped=1), T1)

    body = jobs.public_body(job, retention=0)

    assert body["status"] == PARTIALLY_SUCCEEDED and body["host"] is None
    assert body["job_type"] == "objects" and body["file"] == {"name": "a.csv", "rows": 2}
    assert body["counts"] == {"total": 2, "processed": 2, "created": 1, "updated": 0, "deleted": 0,
                              "skipped": 1, "failed": 0}
    assert "tenant" not in body and "done" not in body and "details" not in body
    assert jobs.public_body(job, PROCESSING, retention=0)["status"] == PROCESSING
    assert jobs.public_body(Job("j2"), retention=0)["job_type"] is None


def test_skipped_records_count_as_not_written() -> None:
    job = submit(Job("j1"), total=2, batches=1)
    job = done(job, 0, Counts(processed=2, skipped=2), T1)
    assert job.status == FAILED and job.error["code"] == "all_records_failed"


def upload(batches: int = 3) -> Job:
    return submitted(Job("j"), tenant="tenant-a", type="resources", action="post", description="load",
                     total=batches * 10, batches=batches, created_at=T0, uploading=True)


def test_a_sealed_upload_waits_for_nothing_more() -> None:
    job = upload()
    assert job.uploading and job.status == QUEUED
    sealed = jobs.sealed(job)
    assert sealed is not None and not sealed.uploading
    assert jobs.sealed(sealed) is None  # a redelivered seal changes nothing
    assert jobs.upload_interrupted(sealed, T1, 31) is None


def test_a_redelivered_submitted_does_not_unseal_the_job() -> None:
    job = jobs.sealed(upload())
    assert job is not None
    again = submitted(job, tenant="tenant-a", type="resources", action="post", description="load",
                      total=30, batches=3, created_at=T0, uploading=True)
    assert not again.uploading


def test_an_interrupted_upload_fails_with_what_was_applied_and_stops_its_batches() -> None:
    job = done(upload(), 0, batch(10), T1)
    assert not job.stops_batches
    interrupted = jobs.upload_interrupted(job, T2, 31)
    assert interrupted is not None
    assert interrupted.status == FAILED and interrupted.error["code"] == "upload_interrupted"
    assert "applied by then (1)" in interrupted.error["message"] and "31 s" in interrupted.error["message"]
    assert interrupted.counts == batch(10) and interrupted.completed_at == T2
    assert interrupted.stops_batches
    assert jobs.upload_interrupted(interrupted, T3, 40) is None


def test_a_finished_upload_is_never_interrupted() -> None:
    job = upload(batches=1)
    finished = done(job, 0, batch(10), T1)
    assert finished.status == SUCCEEDED and jobs.upload_interrupted(finished, T2, 31) is None


def test_a_failed_or_cancelled_job_applies_no_more_batches() -> None:
    failed_job = failed(upload(), T1, "a message of the job was refused")
    assert failed_job is not None and failed_job.stops_batches
    assert cancelled(upload(), T1).stops_batches
    assert not upload().stops_batches and not jobs.sealed(upload()).stops_batches


def test_a_too_large_job_is_shrunk_and_failed_with_the_reason() -> None:
    job = replace(upload(), description="d" * 5000, details={"columns": ["c"] * 10_000})
    small = jobs.shrunk(job, T1, "the job's status cannot be published: it is 2000000 bytes")
    assert small.details is None and len(small.description) == jobs.MAX_SMALL_DESCRIPTION
    assert small.stops_batches
    assert small.status == FAILED and small.error == {"code": "status_too_large",
                                                      "message": "the job's status cannot be published: "
                                                                 "it is 2000000 bytes"}
    ended = jobs.shrunk(replace(job, status=SUCCEEDED), T1, "too large")
    assert ended.status == SUCCEEDED and ended.details is None


def test_a_long_reason_is_cut() -> None:
    failed_job = failed(upload(), T1, "x" * 100_000)
    assert failed_job is not None and len(failed_job.error["message"]) == jobs.MAX_REASON


# --- retention: when a finished job expires -------------------------------------------------------

DAY = 24 * 3600
ENDED = "2024-05-01T12:00:00.000Z"


@pytest.mark.parametrize("job, retention, shown, expected", [
    pytest.param(Job("j", status=SUCCEEDED, completed_at=ENDED), DAY, None, "2024-05-02T12:00:00.000Z",
                 id="succeeded"),
    pytest.param(Job("j", status=PARTIALLY_SUCCEEDED, completed_at=ENDED), 1, None, "2024-05-01T12:00:01.000Z",
                 id="partially-succeeded-one-second"),
    pytest.param(Job("j", status=FAILED, completed_at=ENDED), 7 * DAY, None, "2024-05-08T12:00:00.000Z",
                 id="failed-default-week"),
    pytest.param(Job("j", status=CANCELLED, completed_at=ENDED), DAY, None, "2024-05-02T12:00:00.000Z",
                 id="cancelled"),
    pytest.param(Job("j", status=SUCCEEDED, completed_at=ENDED), 0, None, None, id="retention-0-keeps-forever"),
    pytest.param(Job("j", status=PROCESSING, started_at=ENDED), DAY, None, None, id="running"),
    pytest.param(Job("j", status=QUEUED), DAY, None, None, id="queued"),
    pytest.param(Job("j", status=jobs.SUSPENDED), DAY, None, None, id="suspended"),
    pytest.param(Job("j", status=jobs.SCHEDULED, schedule={"runs": 3}, runs_fired=2), DAY, None, None,
                 id="definition-with-runs-to-fire"),
    pytest.param(Job("j", status=SUCCEEDED, schedule={"runs": 3}, runs_fired=3, completed_at=ENDED), DAY, None,
                 "2024-05-02T12:00:00.000Z", id="definition-all-runs-fired"),
    pytest.param(Job("j", status=SUCCEEDED, completed_at=ENDED), DAY, PROCESSING, None,
                 id="results-not-all-in-the-view-yet"),
    pytest.param(Job("j", status=DELETED, completed_at=ENDED), DAY, None, None, id="deleted"),
])
def test_a_finished_job_expires_retention_seconds_after_it_completed(job: Job, retention: int, shown: str | None,
                                                                     expected: str | None) -> None:
    assert jobs.expires_at(job, retention, shown) == expected
    assert jobs.public_body(job, shown, retention=retention)["expires_at"] == expected


@pytest.mark.parametrize("now, due", [
    pytest.param("2024-05-01T12:00:59.999Z", False, id="a-millisecond-before"),
    pytest.param("2024-05-01T12:01:00.000Z", True, id="at-expires-at"),
    pytest.param("2024-05-01T12:01:00.001Z", True, id="a-millisecond-after"),
])
def test_a_job_is_expired_from_its_expires_at_on(now: str, due: bool) -> None:
    job = Job("j", status=SUCCEEDED, completed_at=ENDED)
    assert jobs.expired(job, 60, parse_time(now)) is due
    assert jobs.expired(replace(job, status=PROCESSING), 60, parse_time(now)) is False  # never a running job
    assert jobs.expired(job, 0, parse_time(now)) is False  # kept forever


@pytest.mark.parametrize("job, all_in", [
    pytest.param(Job("j", batches=3, done=0b111), True, id="every-batch-counted"),
    pytest.param(Job("j", batches=3, done=0b011), False, id="one-batch-not-counted"),
    pytest.param(Job("j", batches=0), True, id="no-batches-an-export"),
    pytest.param(Job("j"), False, id="totals-unknown"),
    pytest.param(Job("j", batches=2, schedule={"runs": 1}, parked=[[0, 1], [1, 4]]), True,
                 id="definition-every-batch-held"),
    pytest.param(Job("j", batches=2, schedule={"runs": 1}, parked=[[0, 1]]), False,
                 id="definition-one-batch-not-held"),
])
def test_all_batches_in_says_whether_a_batch_of_the_job_can_still_come(job: Job, all_in: bool) -> None:
    assert job.all_batches_in is all_in


@pytest.mark.parametrize("value, seconds", [
    pytest.param(None, 7 * DAY, id="default-a-week"),
    pytest.param("0", 0, id="0-keeps-forever"),
    pytest.param("1", 1, id="one-second"),
])
def test_the_job_retention_setting(value: str | None, seconds: int) -> None:
    env = {} if value is None else {"BULKJOBS_JOB_RETENTION": value}
    assert Settings.from_env(env).job_retention == seconds


def test_a_negative_job_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="BULKJOBS_JOB_RETENTION"):
        Settings.from_env({"BULKJOBS_JOB_RETENTION": "-1"})
