"""/livez and /readyz, the API's probes for orchestrators, over a view on disk and a fake
publisher: no API key, 200 when ready, 503 in the error shape saying what is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bulkjobs.api import reads
from bulkjobs.api.app import build_app
from bulkjobs.api.common import PUBLISHER, READER
from bulkjobs.settings import Settings
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect


class Broker:
    """What the readiness check asks of the publisher: whether the broker answers."""

    def __init__(self) -> None:
        self.down = False
        self.hangs = False

    async def reachable(self) -> None:
        if self.hangs:
            await asyncio.sleep(3600)
        if self.down:
            raise ConnectionError("Unable to get cluster metadata")


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
async def client(tmp_path: Path, broker: Broker) -> AsyncIterator[TestClient]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")
        app[READER] = ViewReader(db)
        app[PUBLISHER] = broker  # type: ignore[assignment]
        yield
        await db.close()

    settings = Settings(data_dir=tmp_path, api_keys={"key-a": "tenant-a"})
    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client


async def test_livez_answers_200_without_a_key(client: TestClient) -> None:
    resp = await client.get("/livez")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_readyz_answers_200_without_a_key_when_kafka_and_the_view_answer(client: TestClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_readyz_answers_503_when_kafka_cannot_be_reached(client: TestClient, broker: Broker) -> None:
    broker.down = True
    resp = await client.get("/readyz")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "unavailable" and error["message"].startswith("Kafka cannot be reached")
    assert (await client.get("/livez")).status == 200  # alive all the same: nothing to restart it for


async def test_readyz_gives_up_on_a_broker_that_does_not_answer(client: TestClient, broker: Broker,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reads, "READY_TIMEOUT", 0.1)
    broker.hangs = True
    resp = await client.get("/readyz")
    assert resp.status == 503 and "Kafka cannot be reached" in (await resp.json())["error"]["message"]


async def test_readyz_answers_503_when_the_view_cannot_be_read(client: TestClient) -> None:
    await client.app[READER].db.close()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["error"]["message"].startswith("the view cannot be read")


async def test_other_routes_still_need_a_key(client: TestClient) -> None:
    assert (await client.get("/v1/jobs")).status == 401
