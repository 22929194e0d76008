"""Metrics without a broker: the API's counts by form and route pattern (over a publisher that
takes every job), the consumer lag, and the store's counts of what it writes and of the view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from bulkjobs.api import metrics as api_metrics
from bulkjobs.api.app import build_app
from bulkjobs.api.common import PUBLISHER, READER
from bulkjobs.api.spool import BatchSpool
from bulkjobs.domain.records import OP_CREATE
from bulkjobs.kafka.topics import JobSubmitted, encode
from bulkjobs.metrics import LagGauge, consumer_lag
from bulkjobs.settings import Settings
from bulkjobs.store import metrics as store_metrics
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter

KEY = {"x-api-key": "key-a"}


class TakingPublisher:
    async def submit(self, submitted: JobSubmitted, spool: BatchSpool | None) -> None:
        pass


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")
        app[PUBLISHER] = TakingPublisher()  # type: ignore[assignment]
        app[READER] = ViewReader(db)
        yield
        await db.close()

    settings = Settings(data_dir=tmp_path, api_keys={"key-a": "tenant-a"}, partitions=3, batch_records=4)
    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client


def api_value(name: str, **labels: str) -> float:
    return api_metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_need_no_key_and_label_routes_by_their_pattern(client: TestClient) -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    labels = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}
    before = api_value("bulkjobs_api_requests_total", **labels)
    assert (await client.get(f"/v1/jobs/{job_id}", headers=KEY)).status == 404
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert job_id not in await resp.text()
    assert api_value("bulkjobs_api_requests_total", **labels) == before + 1
    unmatched = {"method": "GET", "route": api_metrics.UNMATCHED, "status": "401"}
    before = api_value("bulkjobs_api_requests_total", **unmatched)
    assert (await client.get(f"/no/such/{job_id}")).status == 401
    assert api_value("bulkjobs_api_requests_total", **unmatched) == before + 1


RECORDS = [{"type": "server", "external_id": f"e{i}"} for i in range(3)]
CSV = "external_id,rpm\r\nm-1,5\r\nm-2,6\r\n"
CSV_SETTINGS = {"operation": "upsert", "object_type": "machine"}
ONE_OF_EACH_FORM: list[tuple[api_metrics.Form, dict[str, Any], int]] = [
    (api_metrics.Form.JSON, {"json": {"type": "resources", "action": "external_id_set", "data": RECORDS}}, 3),
    (api_metrics.Form.JSON, {"data": orjson.dumps(RECORDS), "headers": {"content-type": "application/json"},
                             "params": {"type": "resources", "action": "external_id_set"}}, 3),
    (api_metrics.Form.NDJSON, {"data": b"\n".join(orjson.dumps(r) for r in RECORDS),
                               "headers": {"content-type": "application/x-ndjson"},
                               "params": {"type": "resources", "action": "external_id_set"}}, 3),
    (api_metrics.Form.CSV, {"data": CSV, "headers": {"content-type": "text/csv"}, "params": CSV_SETTINGS}, 2),
    (api_metrics.Form.MULTIPART, {"multipart": True}, 2),
    (api_metrics.Form.FILE_CONTENT, {"json": {**CSV_SETTINGS, "file_content": CSV}}, 2),
    (api_metrics.Form.EXPORT, {"json": {"kind": "export", "title": "machines", "object_type": "machine"}}, 0),
]


@pytest.mark.parametrize(("form", "request_args", "records"), ONE_OF_EACH_FORM)
async def test_each_form_counts_its_job_records_and_bytes(client: TestClient, form: api_metrics.Form,
                                                          request_args: dict[str, Any], records: int) -> None:
    if request_args.pop("multipart", False):
        body = FormData()
        body.add_field("job", orjson.dumps(CSV_SETTINGS).decode())
        body.add_field("file", CSV, filename="machines.csv", content_type="text/csv")
        request_args = {"data": body}
    counted = ("bulkjobs_api_jobs_submitted_total", "bulkjobs_api_records_received_total")
    before = [api_value(name, form=form) for name in counted]
    bytes_before = api_value("bulkjobs_api_received_bytes_total", route="/v1/jobs")
    headers = {**KEY, **request_args.pop("headers", {})}
    resp = await client.post("/v1/jobs", headers=headers, **request_args)
    assert resp.status == 202, await resp.text()
    assert [api_value(name, form=form) - value for name, value in zip(counted, before, strict=True)] == [1, records]
    received = api_value("bulkjobs_api_received_bytes_total", route="/v1/jobs") - bytes_before
    sent = request_args.get("data")
    if isinstance(sent, str | bytes):
        assert received == len(sent.encode() if isinstance(sent, str) else sent)
    else:
        assert received > 0


class FakeConsumer:
    def __init__(self, highwaters: dict[tuple[str, int], int | None], positions: dict[tuple[str, int], int]) -> None:
        self.highwaters, self.positions = highwaters, positions

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(topic, partition) for topic, partition in self.highwaters}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[(tp.topic, tp.partition)]

    async def position(self, tp: TopicPartition) -> int | None:
        return self.positions.get((tp.topic, tp.partition))


async def test_the_lag_is_the_highwater_less_what_was_handled_or_the_position() -> None:
    consumer = FakeConsumer({("b", 0): 10, ("b", 1): 7, ("b", 2): None, ("other", 0): 5},
                            positions={("b", 0): 10, ("b", 1): 3})
    assert await consumer_lag(consumer, ("b",)) == {("b", 0): 0, ("b", 1): 4}
    assert await consumer_lag(consumer, ("b",), {("b", 0): 6}) == {("b", 0): 4, ("b", 1): 4}


def test_a_lag_gauge_shows_only_the_partitions_assigned_now() -> None:
    registry = CollectorRegistry()
    gauge = LagGauge("lag", "test", registry)
    gauge.show({("b", 0): 3, ("b", 1): 0})
    gauge.show({("b", 1): 2})
    assert registry.get_sample_value("lag", {"topic": "b", "partition": "0"}) is None
    assert registry.get_sample_value("lag", {"topic": "b", "partition": "1"}) == 2


def store_value(name: str, **labels: str) -> float:
    return store_metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_store_counts_rows_by_table_and_the_view_shows_its_size(tmp_path: Path) -> None:
    db = await connect(tmp_path / "view.db")
    tables = ("job_batches", "objects", "workers")
    before = {table: store_value("bulkjobs_store_rows_written_total", table=table) for table in tables}
    transactions = store_value("bulkjobs_store_transaction_seconds_count")
    ops = [[OP_CREATE, f"{i:032x}", "t", "m", None, {}, "2026-01-01T00:00:00.000Z"] for i in range(3)]
    applied = {"job_id": "j" * 32, "seq": 0, "at": "2026-01-01T00:00:00.000Z", "counts": {"created": 3},
               "results": [[i, True, f"{i:032x}", None, "created"] for i in range(3)], "ops": ops}
    beat = {"worker": "w", "host": "h", "pid": 1, "at": "2026-01-01T00:00:00.000Z", "partitions": [0]}
    try:
        await ViewWriter(db).write([encode(applied)], [], [beat])
    finally:
        await db.close()
    assert {table: store_value("bulkjobs_store_rows_written_total", table=table) - before[table]
            for table in tables} == {"job_batches": 1, "objects": 3, "workers": 1}
    assert store_value("bulkjobs_store_transaction_seconds_count") == transactions + 1

    registry = CollectorRegistry()
    registry.register(store_metrics.ViewCollector(tmp_path / "view.db"))
    assert registry.get_sample_value("bulkjobs_view_rows", {"table": "job_batches"}) == 1
    assert registry.get_sample_value("bulkjobs_view_rows", {"table": "objects"}) == 3
    assert registry.get_sample_value("bulkjobs_view_jobs", {"status": "queued"}) == 0
    assert (registry.get_sample_value("bulkjobs_view_bytes") or 0) > 0


def test_a_view_not_made_yet_leaves_out_only_the_view_gauges(tmp_path: Path) -> None:
    (tmp_path / "view.db").write_bytes(b"")  # created, no tables yet
    registry = CollectorRegistry()
    registry.register(store_metrics.ViewCollector(tmp_path / "view.db"))
    registry.register(store_metrics.REGISTRY)
    assert registry.get_sample_value("bulkjobs_view_rows", {"table": "jobs"}) is None
    assert registry.get_sample_value("bulkjobs_store_transaction_seconds_count") is not None
