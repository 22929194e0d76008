"""What the store does with a deleted (or expired) job: its late results are not written, its
original upload leaves the disk, and the tombstone that follows its status is skipped quietly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from bulkjobs.domain.jobs import DELETED, SUCCEEDED, Job
from bulkjobs.kafka.topics import TopicNames, encode, status_of
from bulkjobs.store.feeder import _write, remove_uploads
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter

AT = "2026-01-01T00:00:00.000Z"
GONE, KEPT = "a" * 32, "b" * 32
NAMES = TopicNames("t")


def status(job_id: str, state: str) -> dict[str, Any]:
    return dict(status_of(Job(id=job_id, tenant="acme", type="resources", action="post", status=state, total=1,
                              batches=1, done=1, created_at=AT, completed_at=AT, updated_at=AT)))


def applied(job_id: str, seq: int = 0) -> dict[str, Any]:
    return {"job_id": job_id, "seq": seq, "at": AT, "counts": {"created": 1}, "ops": [],
            "results": [[0, True, f"{seq:032x}", None, "created"]]}


async def test_results_read_after_their_job_was_deleted_are_not_written(tmp_path: Path) -> None:
    db = await connect(tmp_path / "view.db")
    try:
        writer = ViewWriter(db)
        await writer.write([], [status(GONE, SUCCEEDED), status(KEPT, SUCCEEDED)], [])
        await writer.write([], [status(GONE, DELETED)], [])
        # the deleted job's last results come late
        await writer.write([encode(applied(GONE)), encode(applied(KEPT))], [], [])
        batches = await db.execute_fetchall("SELECT job_id, records FROM job_batches")
    finally:
        await db.close()
    assert [tuple(row) for row in batches] == [(KEPT, 1)]


def test_a_deleted_jobs_upload_leaves_the_disk_and_no_other(tmp_path: Path) -> None:
    uploads = UploadFiles(tmp_path / "uploads")
    for job_id in (GONE, KEPT):
        with uploads.create(job_id) as file:
            file.write(b"external_id\na\n")
    remove_uploads(uploads, [status(GONE, DELETED), status(KEPT, SUCCEEDED), {**status(GONE, DELETED), "id": "../x"}])
    assert (uploads.exists(GONE), uploads.exists(KEPT)) == (False, True)
    remove_uploads(uploads, [status(GONE, DELETED)])  # read again after a restart: nothing to remove, no error


def record(topic: str, offset: int, key: bytes, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0, key=key,
                          value=value, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(value or b""), headers=())


async def test_the_feeder_skips_a_status_tombstone_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = await connect(tmp_path / "view.db")
    messages = [record(NAMES.status, 0, GONE.encode(), encode(status(GONE, DELETED))),
                record(NAMES.status, 1, GONE.encode(), None)]
    try:
        with caplog.at_level(logging.WARNING):
            statuses = await _write(ViewWriter(db), NAMES, {TopicPartition(NAMES.status, 0): messages})
        deleted = await db.execute_fetchall("SELECT id FROM deleted_jobs")
    finally:
        await db.close()
    assert [s["status"] for s in statuses] == [DELETED] and [row[0] for row in deleted] == [GONE]
    assert caplog.records == []
