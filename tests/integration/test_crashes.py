"""SIGKILL in the middle of a job: the worker, then the store feeder. Nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs.kafka.topics import TopicNames
from tests.support import Client, Stack, wait_for

RECORDS = 50_000


def messages_in(brokers: str, topic: str) -> int:
    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=brokers)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(count())


def submit_big_job(api: Client, kind: str) -> dict:
    data = [{"type": kind, "external_id": f"{kind}-{i}", "attributes": {"i": i, "pad": "x" * 60}}
            for i in range(RECORDS)]
    return api.submit({"type": "resources", "action": "external_id_set", "data": data})


def assert_exactly_once(api: Client, job_id: str, kind: str) -> None:
    job = api.wait_done(job_id, timeout=120)
    assert job["status"] == "succeeded"
    assert job["counts"] == {"total": RECORDS, "processed": RECORDS, "created": RECORDS, "updated": 0,
                             "deleted": 0, "skipped": 0, "failed": 0}
    results = api.results(job_id)
    assert [r["index"] for r in results] == list(range(RECORDS))
    assert all(r["success"] for r in results)
    assert len({r["id"] for r in results}) == RECORDS
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == RECORDS
    sample = api.get(f"/v1/objects?type={kind}&external_id={kind}-{RECORDS - 1}").body["items"]
    assert len(sample) == 1 and sample[0]["attributes"]["i"] == RECORDS - 1


def kill_when(stack: Stack, part: str, condition: Callable[[], bool]) -> None:
    wait_for(condition, timeout=60, interval=0.01, what=f"the moment to kill the {part}")
    stack.kill(part)


def test_worker_killed_mid_job_finishes_exactly_once(make_stack) -> None:
    stack = make_stack(BULKJOBS_BATCH_RECORDS="100").start_all()
    api = stack.client()
    names = TopicNames(stack.prefix)
    before = messages_in(stack.brokers, names.changes)
    job = submit_big_job(api, "crash-worker")

    kill_when(stack, "worker", lambda: messages_in(stack.brokers, names.changes) - before >= 20)

    applied = messages_in(stack.brokers, names.changes) - before
    assert applied < RECORDS // 100, "the worker finished before it was killed: the test proved nothing"
    assert api.job(job["id"])["status"] in ("queued", "processing")
    stack.start("worker")
    assert_exactly_once(api, job["id"], "crash-worker")


def test_store_killed_mid_job_catches_up_without_doubles(make_stack) -> None:
    stack = make_stack(BULKJOBS_BATCH_RECORDS="100").start_all()
    api = stack.client()
    job = submit_big_job(api, "crash-store")

    kill_when(stack, "store", lambda: 0 < api.job(job["id"])["counts"]["processed"])

    frozen = api.job(job["id"])["counts"]["processed"]
    assert frozen < RECORDS, "the view was complete before the store was killed: the test proved nothing"
    stack.start("store")
    assert_exactly_once(api, job["id"], "crash-store")


def worker_partitions(api: Client) -> list[list[int]]:
    health = api.get("/v1/health")
    return [w["partitions"] for w in health.body["workers"]] if health.status == 200 else []


def test_two_workers_share_a_job_and_the_survivor_finishes_it(make_stack) -> None:
    stack = make_stack(BULKJOBS_BATCH_RECORDS="100").start_all()
    stack.start("worker", name="worker2")
    api = stack.client()
    names = TopicNames(stack.prefix)
    wait_for(lambda: sorted(len(p) for p in worker_partitions(api)) == [4, 4], timeout=60, interval=0.5,
             what="two workers holding half of the partitions each")

    before = messages_in(stack.brokers, names.changes)
    job = submit_big_job(api, "two-workers")
    kill_when(stack, "worker2", lambda: messages_in(stack.brokers, names.changes) - before >= 20)

    assert messages_in(stack.brokers, names.changes) - before < RECORDS // 100
    assert_exactly_once(api, job["id"], "two-workers")


def test_a_view_that_lost_its_last_commits_reads_them_again(make_stack) -> None:
    """An OS crash or a power cut can take the last commits of the view (SQLite's WAL is synced
    only at checkpoints) after the store committed their Kafka offsets: the view must read those
    messages again, not skip them. Simulated by putting back a copy of the view's files taken
    before a job ran."""
    stack = make_stack().start_all()
    api = stack.client()
    first = api.run({"type": "resources", "action": "external_id_set",
                     "data": [{"type": "lost-commits", "external_id": "a", "attributes": {}}]})
    for part in ("api", "store"):  # stopped, so that the copy is a view as of a commit
        process = stack.processes.pop(part)
        process.terminate()
        process.wait()
    view = [stack.data_dir / name for name in ("bulkjobs.db", "bulkjobs.db-wal", "bulkjobs.db-shm")]
    copies = {path: path.read_bytes() for path in view if path.exists()}
    stack.start("store")
    stack.start("api")
    stack.wait_healthy()
    second = api.run({"type": "resources", "action": "external_id_set",
                      "data": [{"type": "lost-commits", "external_id": str(i), "attributes": {}} for i in range(500)]})

    for part in ("api", "store"):
        stack.kill(part)
    for path in view:  # the commits since the copy are lost
        path.unlink(missing_ok=True)
    for path, data in copies.items():
        path.write_bytes(data)
    stack.start("store")
    stack.start("api")
    stack.wait_healthy()
    wait_for(lambda: api.get(f"/v1/jobs/{second['id']}").status == 200, timeout=60,
             what="the lost job to be read again")
    assert api.wait_done(second["id"], timeout=60)["counts"]["created"] == 500
    assert api.get("/v1/objects?type=lost-commits&limit=1").body["total"] == 501
    assert api.job(first["id"])["status"] == "succeeded"
