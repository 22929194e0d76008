"""Live progress over websockets: a job's states as they change, a tenant's jobs, and auth."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from bulkjobs.kafka.topics import TopicNames
from tests.support import Client, Stack, produce

TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


def big_job(kind: str, n: int) -> dict[str, Any]:
    return {"type": "resources", "action": "external_id_set",
            "data": [{"type": kind, "external_id": str(i), "attributes": {"i": i}} for i in range(n)]}


async def collect(url: str, headers: dict[str, str] | None = None, stop_after: int | None = None,
                  timeout: float = 90) -> tuple[list[dict[str, Any]], int | None]:
    """The JSON messages a socket sends until it closes (or ``stop_after`` of them), and its close code."""
    received: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers or {}, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
            async with asyncio.timeout(timeout):
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        received.append(orjson.loads(message.data))
                        if stop_after is not None and len(received) >= stop_after:
                            break
            return received, ws.close_code


def ws_url(stack: Stack, path: str) -> str:
    return f"ws://127.0.0.1:{stack.port}{path}"


def test_a_job_socket_sends_the_state_then_rising_counts_then_the_end(stack: Stack, api: Client) -> None:
    job = api.submit(big_job(f"live-{uuid.uuid4().hex[:8]}", 50_000))

    started = time.monotonic()
    received, code = asyncio.run(collect(ws_url(stack, f"/v1/jobs/{job['id']}/live"), {"x-api-key": "key-a"}))
    elapsed = time.monotonic() - started

    assert code == 1000
    assert received[0]["id"] == job["id"] and received[0]["status"] in ("queued", "processing", "succeeded")
    processed = [m["counts"]["processed"] for m in received]
    assert processed == sorted(processed)
    assert len(set(processed)) >= 3, processed  # progress, not just the first and last state
    assert received[-1]["status"] == "succeeded" and received[-1]["counts"]["processed"] == 50_000
    assert all(m["status"] not in TERMINAL for m in received[:-1])
    assert len(received) <= 2 + elapsed * 10  # rate-limited to ten a second (about 50 batches changed it)
    assert len(api.results(job["id"])) == 50_000  # a finished state means every result is readable


def test_the_key_may_come_as_a_query_parameter_or_bearer_and_a_finished_job_closes_at_once(
        stack: Stack, api: Client) -> None:
    job = api.run({"type": "resources", "action": "post", "data": [{"type": "live-done"}]})
    for url, headers in ((f"/v1/jobs/{job['id']}/live?api_key=key-a", None),
                         (f"/v1/jobs/{job['id']}/live", {"Authorization": "Bearer key-a"})):
        received, code = asyncio.run(collect(ws_url(stack, url), headers))
        assert code == 1000 and [m["status"] for m in received] == ["succeeded"]


@pytest.mark.parametrize("path, headers, code", [
    ("/v1/live", None, 1008),
    ("/v1/live?api_key=wrong", None, 1008),
    ("/v1/jobs/abc/live", {"x-api-key": "wrong"}, 1008),
    ("/v1/jobs/abc/live", {"x-api-key": "key-a"}, 4404),
])
def test_a_wrong_key_or_job_closes_before_any_data(stack: Stack, path: str, headers: dict[str, str] | None,
                                                    code: int) -> None:
    received, close_code = asyncio.run(collect(ws_url(stack, path), headers))
    assert (received, close_code) == ([], code)


def test_another_tenants_job_is_not_found(stack: Stack, api: Client) -> None:
    job = api.run({"type": "resources", "action": "post", "data": [{"type": "live-mine"}]})
    received, code = asyncio.run(collect(ws_url(stack, f"/v1/jobs/{job['id']}/live?api_key=key-b")))
    assert (received, code) == ([], 4404)


def test_the_tenant_socket_sees_every_job_of_the_tenant_only(stack: Stack, api: Client, api_b: Client) -> None:
    async def run() -> tuple[list[dict[str, Any]], list[str], str]:
        received: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(stack, "/v1/live?api_key=key-a")) as ws:
                other = await asyncio.to_thread(api_b.submit, big_job("live-tb", 10))
                mine = [(await asyncio.to_thread(api.submit, big_job(f"live-t{i}", 2000)))["id"] for i in (1, 2)]
                finished: set[str] = set()
                async with asyncio.timeout(120):  # the shared stack may still be busy with earlier tests
                    while finished != set(mine):
                        body = orjson.loads((await ws.receive()).data)
                        received.append(body)
                        if body["status"] in TERMINAL:
                            finished.add(body["id"])
        return received, mine, other["id"]

    received, mine, other = asyncio.run(run())

    assert {m["id"] for m in received} == set(mine)  # tenant B's job never shows
    for job_id in mine:
        states = [m for m in received if m["id"] == job_id]
        assert states[-1]["status"] == "succeeded" and states[-1]["counts"]["processed"] == 2000
        assert [m["counts"]["processed"] for m in states] == sorted(m["counts"]["processed"] for m in states)
    assert api_b.wait_done(other)["status"] == "succeeded"


def test_only_the_live_routes_skip_the_auth_middleware(stack: Stack) -> None:
    assert stack.client(None).get("/v1/objects/live").status == 401
    assert stack.client(None).get("/v1/jobs/live").status == 401


def produce_to_status_topic(stack: Stack, messages: list[tuple[bytes | None, bytes]]) -> None:
    produce(stack.brokers, TopicNames(stack.prefix).status, messages)


MALFORMED_STATUSES = [
    (b"junk", b"not json"),
    (b"junk", b"[1, 2]"),
    (None, b"{}"),
    (b"\xff\xfe", b'{"id": 5}'),
    (b"bad-counts", b'{"id": "bad-counts", "tenant": "tenant-a", "status": "processing", "counts": "lots"}'),
]


def test_malformed_statuses_are_skipped_and_live_updates_go_on(stack: Stack, api: Client) -> None:
    async def run() -> tuple[list[dict[str, Any]], str]:
        received: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(stack, "/v1/live?api_key=key-a")) as ws:
                await asyncio.to_thread(produce_to_status_topic, stack, MALFORMED_STATUSES)
                job = await asyncio.to_thread(api.submit, big_job(f"live-after-junk-{uuid.uuid4().hex[:8]}", 2000))
                async with asyncio.timeout(120):
                    while not received or received[-1]["id"] != job["id"] or received[-1]["status"] not in TERMINAL:
                        received.append(orjson.loads((await ws.receive()).data))
        return received, job["id"]

    received, job_id = asyncio.run(run())

    assert received[-1]["status"] == "succeeded" and received[-1]["counts"]["processed"] == 2000
    assert "bad-counts" not in {m["id"] for m in received}
    assert api.wait_done(job_id)["status"] == "succeeded"  # the store skipped them too
    assert stack.client(None).get("/v1/health").status == 200
