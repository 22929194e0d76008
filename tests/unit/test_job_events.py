"""Job events produced to Kafka: checking them, and the request/part state of a job."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import orjson
import pytest

from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import FAILED, QUEUED, SUCCEEDED, Job
from bulkjobs.kafka.batching import Batcher
from bulkjobs.kafka.topics import (
    MAX_REQUEST_BYTES,
    MAX_VALUE_BYTES,
    JobRequest,
    RecordBatch,
    RecordPart,
    encode,
    job_event_from,
    job_from_status,
    names_in,
    status_message,
    status_of,
)

T0, T1, T2 = "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z"
REQUEST = {"kind": "request", "job_id": "job-1", "tenant": "acme", "type": "resources",
           "action": "external_id_set", "parts": 2, "description": "nightly"}


def event(value: Any, key: bytes | None = b"job-1") -> Any:
    return job_event_from(key, orjson.dumps(value))


def test_a_request_and_its_parts_are_read() -> None:
    assert event(REQUEST) == JobRequest("job-1", "acme", "resources", "external_id_set", 2, "nightly")
    assert event({"kind": "part", "job_id": "job-1", "part": 1, "records": [{"a": 1}]}) == RecordPart(
        "job-1", 1, [{"a": 1}])


@pytest.mark.parametrize("value, key, reason", [
    pytest.param(b"not json", b"job-1", "not JSON", id="not-json"),
    pytest.param([1, 2], b"job-1", "not a JSON object", id="array"),
    pytest.param({"kind": "mystery", "job_id": "job-1"}, b"job-1", "unknown job event kind", id="unknown-kind"),
    pytest.param({**REQUEST, "extra": 1}, b"job-1", "wrong fields", id="extra-field"),
    pytest.param({"kind": "request", "job_id": "job-1"}, b"job-1", "wrong fields", id="missing-fields"),
    pytest.param({**REQUEST, "tenant": ""}, b"job-1", "tenant", id="no-tenant"),
    pytest.param({**REQUEST, "type": "things"}, b"job-1", "unknown type", id="bad-type"),
    pytest.param({**REQUEST, "action": "update", "type": "relationships"}, b"job-1", "action", id="bad-action"),
    pytest.param({**REQUEST, "parts": 0}, b"job-1", "parts", id="no-parts"),
    pytest.param({**REQUEST, "parts": True}, b"job-1", "parts", id="bool-parts"),
    pytest.param({**REQUEST, "description": 5}, b"job-1", "description", id="bad-description"),
    pytest.param({**REQUEST, "job_id": "a/b"}, b"a/b", "job_id", id="bad-job-id"),
    pytest.param(REQUEST, b"job-2", "key must be the job id", id="wrong-key"),
    pytest.param(REQUEST, None, "key must be the job id", id="no-key"),
    pytest.param({"kind": "part", "job_id": "job-1", "part": -1, "records": []}, b"job-1", "part", id="bad-part"),
    pytest.param({"kind": "part", "job_id": "job-1", "part": 0, "records": {}}, b"job-1", "records",
                 id="records-not-a-list"),
])
def test_malformed_events_say_why(value: Any, key: bytes | None, reason: str) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    with pytest.raises(ValueError, match=reason):
        job_event_from(key, raw)


@pytest.mark.parametrize("key, value, names", [
    (b"job-1", b"garbage", ("job-1", None)),
    (None, orjson.dumps({"job_id": "job-2", "tenant": "acme"}), ("job-2", "acme")),
    (None, orjson.dumps([1]), (None, None)),
    (None, orjson.dumps({"job_id": 5, "tenant": ""}), (None, None)),
])
def test_names_in_a_malformed_message(key: bytes | None, value: bytes, names: tuple[str | None, str | None]) -> None:
    assert names_in(key, value) == names


def requested() -> Job:
    job = jobs.requested(Job("job-1"), tenant="acme", type="resources", action="post", description=None,
                         parts=2, created_at=T0)
    assert job is not None
    return job


def test_a_request_starts_a_job_once() -> None:
    job = requested()
    assert (job.tenant, job.parts, job.status, job.total) == ("acme", 2, QUEUED, None)
    assert jobs.requested(job, tenant="other", type="resources", action="post", description=None, parts=1,
                          created_at=T1) is None


def test_parts_are_routed_once_each_and_the_last_gives_the_totals() -> None:
    job = requested()
    assert jobs.wants_part(job, 1) and not jobs.wants_part(job, 2)
    job = jobs.part_routed(job, 1, records=5, batches=2, at=T1)
    assert not jobs.wants_part(job, 1) and jobs.wants_part(job, 0)
    assert (job.next_index, job.next_seq, job.total) == (5, 2, None)
    job = jobs.batch_done(job, 0, Counts(processed=3, created=3), T1, "h") or job
    job = jobs.part_routed(job, 0, records=3, batches=1, at=T2)
    assert (job.total, job.batches, job.status) == (8, 3, "processing")
    for seq, n in ((1, 2), (2, 3)):
        job = jobs.batch_done(job, seq, Counts(processed=n, created=n), T2) or job
    assert job.status == SUCCEEDED and job.counts.processed == 8
    assert Job.from_dict(orjson.loads(orjson.dumps(job.to_dict()))) == job


def test_parts_without_records_fail_the_job() -> None:
    job = jobs.part_routed(jobs.part_routed(requested(), 0, 0, 0, T1), 1, 0, 0, T2)
    assert job.status == FAILED and job.error and "no records" in job.error["message"]


def test_an_http_job_or_an_ended_one_wants_no_parts() -> None:
    assert not jobs.wants_part(Job("j"), 0)
    assert not jobs.wants_part(jobs.cancelled(requested(), T1) or Job("j"), 0)


def route(records: list[Any], first_index: int, first_seq: int) -> list[tuple[int, RecordBatch]]:
    out: list[tuple[int, bytes]] = []
    batcher = Batcher(job_id="job-1", tenant="acme", record_type="resources", action="post", partitions=4,
                      batch_records=3, batch_bytes=1 << 20, emit=lambda p, payload: out.append((p, payload)),
                      first_index=first_index, first_seq=first_seq)
    batcher.add(records, 100 * len(records))
    batcher.close()
    return [(p, RecordBatch(**orjson.loads(payload))) for p, payload in out]


def test_routing_a_part_again_repeats_the_same_batches() -> None:
    records = [{"type": "t"} for _ in range(10)] + [{"type": "t", "external_id": f"e{i}"} for i in range(5)]
    first = route(records, first_index=20, first_seq=7)
    assert first == route(records, first_index=20, first_seq=7)
    assert [batch.seq for _, batch in first] == list(range(7, 7 + len(first)))
    indexes = sorted(item[0] for _, batch in first for item in batch.items)
    assert indexes == list(range(20, 35))


def status_job(**values: object) -> Job:
    return Job(**{"id": "j", "tenant": "acme", "type": "resources", "action": "post", "total": 1, "batches": 1,
                  "created_at": "2026-01-01T00:00:00.000Z", **values})


def test_a_status_is_every_field_of_its_job_and_its_progress() -> None:
    job = status_job(counts=Counts(processed=1, created=1), done=1, parked=[[0, 7]], schedule={"cron": "* * * * *"})
    status = orjson.loads(encode(status_of(job)))
    assert set(status) == {field.name for field in dataclasses.fields(Job)} | {"progress"}
    assert status["progress"] == 100 and status["done"] == "1"
    assert job_from_status(status) == job


def test_a_status_that_fits_is_sent_as_it_is() -> None:
    job = status_job(description="small")
    assert status_message(job, "2026-01-01T00:00:01.000Z") == (job, encode(status_of(job)))


@pytest.mark.parametrize("values, problem", [
    ({"description": "d" * 1_010_000}, "bytes, over the limit of"),
    ({"details": {"mapping": [{"index": i, "name": f"column-{i}"} for i in range(30_000)]}},
     "bytes, over the limit of"),
    ({"details": functools.reduce(lambda inner, _: {"a": inner}, range(300), {})}, "cannot be encoded"),
])
def test_a_status_too_large_for_the_producer_fails_the_job_and_is_sent_small(values: dict, problem: str) -> None:
    job, value = status_message(status_job(**values), "2026-01-01T00:00:01.000Z")
    assert len(value) < 10_000 < MAX_VALUE_BYTES < MAX_REQUEST_BYTES
    sent = job_from_status(orjson.loads(value))
    assert sent == job and sent.status == "failed" and sent.details is None
    assert sent.error["code"] == "status_too_large" and problem in sent.error["message"]
