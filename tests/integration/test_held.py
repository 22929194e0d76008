"""Held batches live in the compacted held topic, so the batches topic may expire.

Tansu's memory storage neither expires records nor accepts DeleteRecords (see test_snapshots), so
the tests cannot make the batches topic's records unreadable. They prove instead that a resume
and every run of a definition read held batches only from their copies in the held topic (the
worker counts where each batch it sent on was read), that the counts come out exact, and that
every copy is dropped (a tombstone is its latest record) once nothing will send it again. Nor
does Tansu compact: reading a copy that compaction replaced or dropped is shown by reading from
just after the records it would have removed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bulkjobs.broker import EmbeddedBroker, free_port
from bulkjobs.kafka import clients
from bulkjobs.kafka.refetch import Refetcher
from bulkjobs.kafka.topics import TopicNames
from tests.integration.test_lifecycle import OpenJob, records, runs_of, settled
from tests.integration.test_metrics import scrape
from tests.support import TERMINAL, Stack, wait_for

PARTITIONS = 8
SENT_ON = "bulkjobs_worker_held_batches_sent_on_total"


@pytest.fixture(scope="module")
def holding(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack()
    stack.metrics_ports = {"worker": free_port()}
    yield stack.start_all()


def held_copies(stack: Stack, job_id: str) -> dict[bytes, bytes | None]:
    """The latest record under each key of the job's copies in the held topic (None: a tombstone)."""
    topic = TopicNames(stack.prefix).held

    async def read() -> dict[bytes, bytes | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.brokers, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            latest: dict[bytes, bytes | None] = {}
            left = {tp for tp, end in ends.items() if end > 0}
            while left:
                for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                    for message in messages:
                        if message.key is not None and message.key.startswith(f"{job_id}/".encode()):
                            latest[message.key] = message.value
                        if message.offset >= ends[tp] - 1:
                            left.discard(tp)
            return latest
        finally:
            await consumer.stop()

    return asyncio.run(read())


def serving(stack: Stack) -> bool:
    try:
        scrape(stack.metrics_url("worker"))
    except OSError:
        return False
    return True


def sent_on(stack: Stack, source: str) -> float:
    return scrape(stack.metrics_url("worker")).value(SENT_ON, source=source)


def test_a_job_suspended_mid_run_resumes_from_its_held_copies_after_a_worker_restart(holding: Stack) -> None:
    api = holding.client()
    kind = f"held-{uuid.uuid4().hex[:8]}"
    job = OpenJob(holding, kind, 100_000)  # a slow producer's: the pipeline cannot get ahead of it
    wait_for(lambda: api.get(f"/v1/jobs/{job.id}").status == 200 and api.job(job.id)["counts"]["processed"] > 0,
             what="the job to start")
    assert api.post(f"/v1/jobs/{job.id}/suspend").status == 200
    job.sending.join()  # the parts sent while it is suspended are held
    paused = settled(api, job.id)
    assert paused["status"] == "suspended" and paused["counts"]["processed"] < 100_000
    copies = held_copies(holding, job.id)
    assert copies and all(value is not None for value in copies.values())

    holding.kill("worker")  # the new worker has only the held topic's copies to send on
    holding.start("worker")
    wait_for(lambda: serving(holding), what="the restarted worker's metrics")
    assert api.post(f"/v1/jobs/{job.id}/resume").status in (200, 202)  # 202: the new worker is still joining
    job.finish()
    done = api.wait_done(job.id, timeout=120)
    assert done["counts"] == {"total": 100_000, "processed": 100_000, "created": 100_000, "updated": 0,
                              "deleted": 0, "skipped": 0, "failed": 0}
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 100_000
    dropped = wait_for(lambda: (latest := held_copies(holding, job.id)) and all(
        value is None for value in latest.values()) and latest, what="the copies to be dropped")
    assert copies.keys() <= dropped.keys()  # and those parked after the suspend was answered
    # Every copy was sent on, some twice: batches the killed worker had parked but not committed
    # are parked again after the restart (a new copy under the same key) and sent on, and dropped
    # as duplicates by the applier; none was read from the batches topic.
    assert sent_on(holding, "held") >= len(dropped) and sent_on(holding, "batches") == 0


def test_every_run_of_a_definition_gets_all_its_records_from_the_held_copies(holding: Stack) -> None:
    api = holding.client()
    kind = f"held-runs-{uuid.uuid4().hex[:8]}"
    before = sent_on(holding, "held")
    definition = api.submit({"type": "resources", "action": "external_id_set", "data": records(kind, 3000),
                             "schedule": {"cron": "* * * * * */2", "runs": 3}})
    wait_for(lambda: api.job(definition["id"])["status"] == "succeeded", timeout=90, what="three runs")
    runs: list[dict[str, Any]] = wait_for(
        lambda: (found := runs_of(api, definition["id"])) and len(found) == 3
        and all(r["status"] in TERMINAL for r in found) and found, what="the three runs to finish")
    assert [(r["status"], r["counts"]["created"], r["counts"]["updated"]) for r in runs] == [
        ("succeeded", 3000, 0), ("succeeded", 0, 3000), ("succeeded", 0, 3000)]
    copies = wait_for(lambda: (latest := held_copies(holding, definition["id"])) and all(
        value is None for value in latest.values()) and latest, what="the copies to be dropped after the last run")
    assert (sent_on(holding, "held") - before, sent_on(holding, "batches")) == (3 * len(copies), 0)


def test_a_copy_is_read_at_its_offset_or_under_its_key_further_on(broker: EmbeddedBroker) -> None:
    topic = f"held-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.address)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        await admin.close()
        producer = clients.producer(broker.address)
        await producer.start()
        reader = Refetcher(broker.address, topic)
        try:
            first = (await producer.send_and_wait(topic, b"first", key=b"j/0/1", partition=0)).offset
            await producer.send_and_wait(topic, b"another", key=b"j/1/2", partition=0)
            again = (await producer.send_and_wait(topic, b"again", key=b"j/0/1", partition=0)).offset
            assert await reader.fetch_copy(0, first, b"j/0/1") == b"first"  # not compacted yet
            assert await reader.fetch_copy(0, first + 1, b"j/0/1") == b"again"  # compacted up to `again`
            await producer.send_and_wait(topic, None, key=b"j/0/1", partition=0)
            assert await reader.fetch_copy(0, again + 1, b"j/0/1") is None  # dropped, then compacted
            assert await reader.fetch_copy(0, first, b"j/9/9") is None
        finally:
            await producer.stop()
            await reader.stop()

    asyncio.run(run())
