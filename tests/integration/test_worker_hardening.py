"""No message, schedule or interrupted upload stops the worker or leaves a job running for ever.

One stack with a short upload timeout (3 s) for the module; the interrupted-upload test kills
and restarts its API.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bulkjobs.clock import utc_now
from bulkjobs.kafka.topics import TopicNames
from tests.support import Client, Stack, wait_for

UPLOAD_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def hardened(make_stack: Any) -> Iterator[Stack]:
    # Small batches: the interrupted job's 100,000 records take 5,000 batch messages to send,
    # so the API is killed while it sends them.
    stack = make_stack(BULKJOBS_UPLOAD_TIMEOUT=str(UPLOAD_TIMEOUT), BULKJOBS_BATCH_RECORDS="20").start_all()
    yield stack
    stack.stop()


def produce(stack: Stack, *messages: dict[str, Any]) -> None:
    """Write job events straight to Kafka, as an outside producer (or a bug) could."""
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.brokers, acks="all", max_batch_size=1)
        await producer.start()
        try:
            for message in messages:
                await producer.send_and_wait(TopicNames(stack.prefix).job_events, orjson.dumps(message),
                                             key=message["job_id"].encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def ended(api: Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """A job produced straight to Kafka, once the view has it finished."""
    return wait_for(lambda: (resp := api.get(f"/v1/jobs/{job_id}")).status == 200
                    and resp.body["status"] in ("failed", "succeeded", "partially_succeeded") and resp.body,
                    timeout=timeout, what=f"job {job_id} to end")


def assert_worker_goes_on(stack: Stack, api: Client) -> None:
    kind = f"after-{uuid.uuid4().hex[:8]}"
    job = api.run({"type": "resources", "action": "post", "data": [{"type": kind, "attributes": {"n": 1}}]},
                  timeout=30)
    assert job["status"] == "succeeded"
    assert stack.processes["worker"].poll() is None, "the worker exited"


def submitted(job_id: str, **values: Any) -> dict[str, Any]:
    return {"kind": "submitted", "job_id": job_id, "tenant": "tenant-a", "type": "resources", "action": "post",
            "description": None, "total": 0, "batches": 0, "created_at": utc_now(), **values}


def test_a_cron_that_never_fires_is_refused_and_the_worker_keeps_running(hardened: Stack) -> None:
    api = hardened.client()
    resp = api.post("/v1/jobs", json_body={"kind": "export", "title": "never", "object_type": "machine",
                                           "schedule": {"cron": "0 0 31 2 *"}})
    assert resp.status == 400 and resp.body["error"]["code"] == "invalid_cron"
    assert resp.body["error"]["field"] == "schedule.cron"

    # One that got in before the check (or past the API): its definition fails, the worker goes on.
    stored = uuid.uuid4().hex
    produce(hardened, submitted(stored, schedule={"immediately": False, "cron": "0 0 31 2 *", "runs": None,
                                                  "start_date": None}))
    job = ended(api, stored)
    assert job["status"] == "failed" and "schedule cannot run" in job["error"]["message"]
    assert_worker_goes_on(hardened, api)


def test_an_event_that_breaks_the_tracker_fails_its_job_and_the_stream_goes_on(hardened: Stack) -> None:
    api = hardened.client()
    broken = uuid.uuid4().hex
    produce(hardened, submitted(broken, total=1, batches="many"))  # well-formed, but no job can count it
    job = ended(api, broken)
    assert job["status"] == "failed" and "could not be handled" in job["error"]["message"]
    assert_worker_goes_on(hardened, api)


def test_a_status_too_large_to_publish_fails_its_job_with_a_small_status(hardened: Stack) -> None:
    api = hardened.client()
    job_id = f"huge-{uuid.uuid4().hex[:8]}"
    produce(hardened, {"kind": "request", "job_id": job_id, "tenant": "tenant-a", "type": "resources",
                       "action": "post", "parts": 1, "description": "d" * 1_000_000})
    job = ended(api, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "status_too_large"
    assert len(job["description"]) == 1000 and "over the limit" in job["error"]["message"]
    assert_worker_goes_on(hardened, api)


def first_batch_sent(stack: Stack, tenant: str, started: threading.Event) -> str:
    """Tail the batches from their end and return the job id of the first batch of ``tenant``
    (``started`` is set once the tail reads): once a batch is in Kafka, the worker applies it."""
    async def tail() -> str:
        consumer = AIOKafkaConsumer(TopicNames(stack.prefix).batches, bootstrap_servers=stack.brokers,
                                    auto_offset_reset="latest", fetch_max_wait_ms=5, enable_auto_commit=False)
        await consumer.start()
        try:
            while True:
                for messages in (await consumer.getmany(timeout_ms=5)).values():
                    for message in messages:
                        batch = orjson.loads(message.value)
                        if batch.get("tenant") == tenant:
                            return str(batch["job_id"])
                if consumer.assignment() and not started.is_set():
                    for tp in consumer.assignment():
                        await consumer.position(tp)
                    started.set()
        finally:
            await consumer.stop()

    return asyncio.run(tail())


def test_an_api_killed_while_publishing_a_job_fails_it_as_upload_interrupted(hardened: Stack) -> None:
    api = hardened.client("key-b")  # the only job of tenant-b in this stack
    kind = f"cut-{uuid.uuid4().hex[:8]}"
    total = 100_000
    body = {"type": "resources", "action": "external_id_set",
            "data": [{"type": kind, "external_id": f"c-{i}", "attributes": {"i": i}} for i in range(total)]}
    ready, found = threading.Event(), []
    tail = threading.Thread(target=lambda: found.append(first_batch_sent(hardened, "tenant-b", ready)))
    tail.start()
    assert ready.wait(30), "the tail of the batches did not start"
    posting = threading.Thread(target=lambda: _post_ignoring_errors(api, body), daemon=True)
    posting.start()
    tail.join(120)
    hardened.kill("api")  # as soon as a first batch is in Kafka: the others are being sent
    killed_at = time.monotonic()
    job_id = found[0]
    hardened.start("api")
    hardened.wait_healthy()

    job = wait_for(lambda: (j := api.job(job_id))["status"] == "failed" and j, timeout=UPLOAD_TIMEOUT + 20,
                   what="the interrupted job to fail")
    took = time.monotonic() - killed_at
    assert job["error"]["code"] == "upload_interrupted"
    counts = job["counts"]
    assert 0 < counts["processed"] < total, "the API was not killed while it sent the batches: the test proved nothing"
    assert counts["processed"] == counts["created"] and counts["failed"] == 0
    time.sleep(2)  # after the failure nothing more of the job is applied: absence cannot be awaited
    assert api.job(job_id)["counts"] == counts
    assert len(results_of(api, job_id)) == counts["processed"]
    assert api.get(f"/v1/objects?type={kind}&limit=1", key="key-b").body["total"] == counts["processed"]
    print(f"interrupted at {counts['processed']} of {total} records; failed {took:.1f} s after the kill")


def results_of(api: Client, job_id: str) -> list[dict[str, Any]]:
    """Every result of a job whose indexes have gaps (``offset`` is the first index to read)."""
    items: list[dict[str, Any]] = []
    while page := api.get(f"/v1/jobs/{job_id}/results?offset={items[-1]['index'] + 1 if items else 0}"
                          "&limit=1000").body["items"]:
        items.extend(page)
    return items


def _post_ignoring_errors(api: Client, body: dict[str, Any]) -> None:
    try:
        api.post("/v1/jobs", json_body=body)
    except OSError:
        pass  # the API was killed under the request


def test_a_batch_that_breaks_the_applier_fails_its_job_and_the_stream_goes_on(hardened: Stack) -> None:
    api = hardened.client()
    job_id = uuid.uuid4().hex
    produce(hardened, submitted(job_id, total=1, batches=1))
    batch = {"job_id": job_id, "tenant": "tenant-a", "type": "resources", "action": "post", "seq": 0, "items": 5}

    async def send_batch() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hardened.brokers, acks="all", max_batch_size=1)
        await producer.start()
        try:
            await producer.send_and_wait(TopicNames(hardened.prefix).batches, orjson.dumps(batch), partition=0)
        finally:
            await producer.stop()

    asyncio.run(send_batch())
    job = ended(api, job_id)
    assert job["status"] == "failed" and "a batch of the job could not be applied" in job["error"]["message"]
    assert_worker_goes_on(hardened, api)
