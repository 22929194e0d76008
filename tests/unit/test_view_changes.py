"""The store reads the changes topic as the worker writes it: every op the rules make lands in
its columns, attributes and results as they were sent; a message that is not an applied batch is
skipped, and the rest of its poll is written."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkjobs.domain.identity import RELATIONSHIPS, RESOURCES
from bulkjobs.domain.records import ObjectIndex, apply_batch
from bulkjobs.kafka.topics import AppliedBatch, encode
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter

TENANT, AT, LATER = "acme", "2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z"
GOOD = "g" * 32


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[tuple[ViewWriter, ViewReader]]:
    db = await connect(tmp_path / "view.db")
    try:
        yield ViewWriter(db), ViewReader(db)
    finally:
        await db.close()


class Worker:
    """The rules applied to one object index, each batch as the worker sends it."""

    def __init__(self) -> None:
        self.index = ObjectIndex()
        self.seq = 0

    def batch(self, record_type: str, action: str, records: list[Any], at: str = AT,
              fresh: list[str] | None = None) -> tuple[bytes, list[list[Any]]]:
        items = [[i, (fresh or [None] * len(records))[i], record] for i, record in enumerate(records)]
        applied = apply_batch(record_type, action, TENANT, items, self.index, at)
        self.seq += 1
        message = AppliedBatch(job_id="j" * 32, tenant=TENANT, seq=self.seq, at=at,
                               counts=applied.counts.to_dict(), results=applied.results, ops=applied.ops)
        return encode(message), applied.results


async def test_every_op_the_rules_make_lands_in_its_columns(view: tuple[ViewWriter, ViewReader]) -> None:
    writer, reader = view
    worker = Worker()
    created, results = worker.batch(RESOURCES, "post", [
        {"type": "machine", "external_id": "m-1", "attributes": {"name": "Ünïcode \"quoted\"", "n": 1.5}},
        {"type": "machine", "attributes": {"tags": ["a", "b"], "nested": {"deep": None}}},
    ], fresh=[None, "f" * 32])
    first, second = (result[2] for result in results)
    await writer.write([created], [], [])
    assert await reader.object(TENANT, first) == {
        "id": first, "type": "machine", "external_id": "m-1", "attributes": {"name": "Ünïcode \"quoted\"", "n": 1.5},
        "created_at": AT, "updated_at": AT}
    assert (await reader.object(TENANT, second) or {})["attributes"] == {"tags": ["a", "b"], "nested": {"deep": None}}

    related, results = worker.batch(RELATIONSHIPS, "post", [
        {"relationship_type": "runs_on", "source": first, "target": second}], fresh=["r" * 32])
    patched, _ = worker.batch(RESOURCES, "update", [{"id": first, "attributes": {"n": 2, "added": True}}], at=LATER)
    deleted, _ = worker.batch(RESOURCES, "delete", [second], at=LATER)
    await writer.write([related, patched, deleted], [], [])
    assert await reader.relationship(TENANT, "r" * 32) == {
        "id": "r" * 32, "relationship_type": "runs_on", "source": first, "target": second, "created_at": AT,
        "updated_at": AT}
    object_now = await reader.object(TENANT, first) or {}
    assert object_now["attributes"] == {"name": "Ünïcode \"quoted\"", "n": 2, "added": True}
    assert object_now["updated_at"] == LATER
    assert await reader.object(TENANT, second) is None

    unrelated, _ = worker.batch(RELATIONSHIPS, "delete", ["r" * 32])
    await writer.write([unrelated], [], [])
    assert await reader.relationship(TENANT, "r" * 32) is None


def message(**changed: Any) -> bytes:
    batch = {"job_id": "b" * 32, "tenant": TENANT, "seq": 0, "at": AT, "counts": {"created": 1},
             "results": [[0, True, "0" * 32, None, "created"]],
             "ops": [["create", "0" * 32, TENANT, "machine", "bad", {"a": 1}, AT]]}
    return orjson.dumps({**batch, **changed})


NOT_APPLIED_BATCHES = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"[1, 2]", id="an-array"),
    pytest.param(b'{"job_id": "b"}', id="fields-missing"),
    pytest.param(message(seq="0"), id="seq-not-an-integer"),
    pytest.param(message(ops=[["bogus", "0" * 32]]), id="an-op-of-an-unknown-type"),
    pytest.param(message(ops=[["create", "0" * 32, TENANT]]), id="a-create-too-short"),
    pytest.param(message(ops=[["create", "0" * 32, 7, "machine", None, {}, AT]]), id="a-tenant-not-a-string"),
    pytest.param(message(ops=[{"op": "create"}]), id="an-op-not-an-array"),
    pytest.param(message(results=[[0, True, None, None]]), id="a-result-too-short"),
    pytest.param(message(results=[[True, True, None, None, "created"]]), id="an-index-not-an-integer"),
    pytest.param(message(results=[[0, True, None, None, "created"]], sources=[1, 2]), id="sources-not-one-per-result"),
    pytest.param(message(results=[[0, True, None, None, "created"]], sources=["1"]), id="sources-not-indexes"),
]


@pytest.mark.parametrize("value", NOT_APPLIED_BATCHES)
async def test_a_message_that_is_not_an_applied_batch_is_skipped_and_the_poll_written(
        view: tuple[ViewWriter, ViewReader], value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = view
    good, _ = Worker().batch(RESOURCES, "post", [{"type": "machine", "external_id": "ok", "attributes": {}}])
    with caplog.at_level(logging.ERROR, logger="bulkjobs.store.writer"):
        await writer.write([value, good], [], [])
    assert "skipping a change that is not an applied batch" in caplog.text
    assert await reader.object(TENANT, "0" * 32) is None  # nothing of the bad message
    assert [batch["seq"] for batch in await reader.batches("j" * 32)] == [1]
    assert await reader.batches("b" * 32) == []


async def test_a_retrys_sources_are_kept_as_sent(view: tuple[ViewWriter, ViewReader]) -> None:
    writer, reader = view
    await writer.write([message(results=[[0, False, None, None, "failed", {"x": 1}]], ops=[], sources=[41])], [], [])
    assert [(result["index"], result["source_index"]) for result in await reader.results("b" * 32, 10, 0)] == [(0, 41)]
