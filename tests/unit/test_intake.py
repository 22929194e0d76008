"""Job intake without a broker: the API's routes over a fake publisher that keeps what it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bulkjobs.api.app import build_app
from bulkjobs.api.common import PUBLISHER, READER
from bulkjobs.api.spool import BatchSpool
from bulkjobs.errors import Unavailable
from bulkjobs.kafka.topics import JobSubmitted, RecordBatch
from bulkjobs.settings import Settings
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

KEY = {"x-api-key": "key-a"}


class FakePublisher:
    """Keeps each submitted job with its batches, read from the spool as the real one does."""

    def __init__(self) -> None:
        self.jobs: list[tuple[JobSubmitted, list[RecordBatch] | None]] = []
        self.refuse = False

    async def submit(self, submitted: JobSubmitted, spool: BatchSpool | None) -> None:
        if self.refuse:
            raise Unavailable("the job could not be written to Kafka: no broker")
        batches = None if spool is None else [RecordBatch(**orjson.loads(payload)) for _, payload in spool]
        self.jobs.append((submitted, batches))

    def records(self) -> list[Any]:
        [(_, batches)] = self.jobs
        return [item[-1] for batch in batches or [] for item in sorted(batch.items)]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, api_keys={"key-a": "tenant-a"}, partitions=3, batch_records=4)


@pytest.fixture
async def client(tmp_path: Path, settings: Settings, publisher: FakePublisher) -> AsyncIterator[TestClient]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")  # an empty view: the cap of active jobs counts from it
        app[PUBLISHER] = publisher  # type: ignore[misc]
        app[READER] = ViewReader(db)
        yield
        await db.close()

    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client


def uploads(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "uploads").glob("*"))


RECORDS = [{"type": "server", "external_id": f"e{i}"} for i in range(10)]


async def test_an_envelope_is_spooled_and_published_once_whole(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY,
                             json={"type": "resources", "action": "post", "data": RECORDS, "description": "d"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    [(submitted, batches)] = publisher.jobs
    assert (submitted.job_id, submitted.tenant, submitted.type, submitted.action) == (
        body["id"], "tenant-a", "resources", "post")
    assert (submitted.total, submitted.batches, body["description"]) == (10, len(batches or []), "d")
    assert sorted(publisher.records(), key=str) == sorted(RECORDS, key=str)


async def test_type_and_action_after_the_data_are_routed_from_held_chunks(client: TestClient,
                                                                          publisher: FakePublisher) -> None:
    body = orjson.dumps({"data": RECORDS, "action": "post", "type": "resources"})
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "application/json"}, data=body)
    assert resp.status == 202, await resp.text()
    [(submitted, _)] = publisher.jobs
    assert (submitted.type, submitted.total) == ("resources", 10)
    assert sorted(publisher.records(), key=str) == sorted(RECORDS, key=str)


async def test_a_bare_array_takes_its_fields_from_the_query(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, json=RECORDS, params={"type": "resources", "action": "post"})
    assert resp.status == 202, await resp.text()
    assert publisher.jobs[0][0].total == 10


@pytest.mark.parametrize("body", [
    {"data": RECORDS, "type": "resources", "action": "post", "kind": "export"},
    {"data": RECORDS, "type": "resources", "action": "post", "file_content": "a\r\n1\r\n"},
    {"data": RECORDS, "type": "resources", "action": "fly"},
    {"data": [], "type": "resources", "action": "post"},
])
async def test_a_refused_json_job_publishes_nothing(client: TestClient, publisher: FakePublisher,
                                                    body: dict[str, Any]) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, json=body)
    assert resp.status == 400, await resp.text()
    assert publisher.jobs == []


async def test_an_export_is_published_without_batches(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY,
                             json={"kind": "export", "title": "machines", "object_type": "machine"})
    assert resp.status == 202, await resp.text()
    [(submitted, batches)] = publisher.jobs
    assert (submitted.type, submitted.total, batches) == ("export", None, None)


CSV = "external_id,rpm\r\nm-1,5\r\nm-2,6\r\n"


async def test_a_csv_job_keeps_its_file_and_publishes_its_rows(tmp_path: Path, client: TestClient,
                                                               publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                             params={"operation": "upsert", "object_type": "machine"})
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    assert [path.name for path in uploads(tmp_path)] == [job_id]
    [(submitted, _)] = publisher.jobs
    assert (submitted.type, submitted.total, (submitted.details or {})["file"]["rows"]) == ("resources", 2, 2)


@pytest.mark.parametrize("fields", [
    {"operation": "upsert", "object_type": "t", "schedule": '{"cron": "nope"}'},  # refused when submitted
    {"operation": "fly", "object_type": "t"},  # refused when planned
])
async def test_a_refused_csv_job_leaves_no_file(tmp_path: Path, client: TestClient, publisher: FakePublisher,
                                                fields: dict[str, str]) -> None:
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV, params=fields)
    assert resp.status == 400, await resp.text()
    assert (uploads(tmp_path), publisher.jobs) == ([], [])


async def test_a_csv_job_kafka_did_not_take_keeps_its_file(tmp_path: Path, client: TestClient,
                                                           publisher: FakePublisher) -> None:
    """Part of it may be published (the publisher then fails the job), so it stays readable."""
    publisher.refuse = True
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                             params={"operation": "upsert", "object_type": "machine"})
    assert resp.status == 503, await resp.text()
    assert len(uploads(tmp_path)) == 1
