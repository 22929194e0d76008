"""Restore without history: a new worker loads its index from the snapshots, not from the changes.

Tansu's memory storage neither expires nor compacts records, and refuses DeleteRecords
(docs/architecture.md, snapshots), so the test cannot make old changes unreadable. It proves
instead that the new worker never reads them: it reads no change at all (the snapshots hold
everything before it, and it never reads back its own writes), and it still knows every
object written before. The same holds for a worker that joins: the one giving partitions up
snapshots them first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs.broker import free_port
from bulkjobs.kafka.topics import TopicNames, manifest_key
from tests.integration.test_crashes import worker_partitions
from tests.integration.test_metrics import scrape
from tests.support import Client, Stack, wait_for

KEYED = 1500  # objects with an external id, in batches of 100 over the 8 partitions
FRESH = 200  # objects without one, updated by id after the restore
PARTITIONS = 8


def topic_state(brokers: str, names: TopicNames) -> tuple[dict[int, int], dict[int, int]]:
    """(end offset of each changes partition, the changes offset of each partition's last manifest)."""
    async def read() -> tuple[dict[int, int], dict[int, int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
        await consumer.start()
        try:
            changes = [TopicPartition(names.changes, p) for p in range(PARTITIONS)]
            ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(changes)).items()}
            snapshots = [TopicPartition(names.snapshots, p) for p in range(PARTITIONS)]
            snapshot_ends = await consumer.end_offsets(snapshots)
            consumer.assign(snapshots)
            await consumer.seek_to_beginning(*snapshots)
            manifests: dict[int, int] = {}
            left = {tp for tp, end in snapshot_ends.items() if end > 0}
            while left:
                for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                    for message in messages:
                        if message.key == manifest_key(tp.partition) and message.value is not None:
                            manifests[tp.partition] = orjson.loads(message.value)["changes_offset"]
                        if message.offset >= snapshot_ends[tp] - 1:
                            left.discard(tp)
            return ends, manifests
        finally:
            await consumer.stop()

    return asyncio.run(read())


def snapshotted_up_to_date(stack: Stack, names: TopicNames) -> dict[int, int] | None:
    """The manifests' offsets, once every changes partition's last change is in its snapshot."""
    ends, manifests = topic_state(stack.brokers, names)
    written = {p for p, end in ends.items() if end > 0}
    if all(manifests.get(p) == ends[p] - 1 for p in written):
        return manifests
    return None


def keyed_objects_made(make_stack: Callable[..., Stack], **env: str) -> tuple[Stack, Client, TopicNames,
                                                                            list[dict[str, Any]]]:
    """A stack (a second worker's metrics port ready) after a job that made ``KEYED`` objects:
    (stack, its client, its topics, the records)."""
    stack = make_stack(BULKJOBS_BATCH_RECORDS="100", **env)
    stack.metrics_ports = {"worker2": free_port()}
    stack.start_all()
    api = stack.client()
    keyed = [{"type": "host", "external_id": f"host-{i}", "attributes": {"v": 1}} for i in range(KEYED)]
    assert api.run({"type": "resources", "action": "external_id_set", "data": keyed})["counts"]["created"] == KEYED
    return stack, api, TopicNames(stack.prefix), keyed


def test_a_new_worker_restores_from_snapshots_then_applies_jobs_against_the_old_objects(
        make_stack: Callable[..., Stack]) -> None:
    stack, api, names, keyed = keyed_objects_made(make_stack, BULKJOBS_SNAPSHOT_SECONDS="1")
    fresh = api.run({"type": "resources", "action": "post", "data": [{"type": "disk"}] * FRESH})
    fresh_ids = [result["id"] for result in api.results(fresh["id"])]

    manifests = wait_for(lambda: snapshotted_up_to_date(stack, names), timeout=120,
                         what="a snapshot of every partition's last change")
    history = sum(offset + 1 for offset in manifests.values())
    assert history >= (KEYED + FRESH) // 100

    stack.processes["worker"].terminate()  # leaves the group: the next worker joins at once
    stack.processes.pop("worker").wait(timeout=30)
    stack.start("worker", name="worker2")

    again = api.run({"type": "resources", "action": "external_id_set",
                     "data": [{**record, "attributes": {"v": 2}} for record in keyed]}, timeout=120)
    assert (again["status"], again["counts"]["updated"], again["counts"]["created"]) == ("succeeded", KEYED, 0)

    twice = api.run({"type": "resources", "action": "post", "data": [keyed[0], {**keyed[0], "external_id": "new"}]})
    assert twice["counts"]["created"] == 1 and twice["counts"]["failed"] == 1
    refused = api.results(twice["id"])[0]
    assert not refused["success"] and refused["errors"][0]["status"] == "422"

    by_id = api.run({"type": "resources", "action": "update",
                     "data": [{"id": object_id, "attributes": {"size": 10}} for object_id in fresh_ids]})
    assert (by_id["status"], by_id["counts"]["updated"]) == ("succeeded", FRESH)

    linked = api.run({"type": "relationships", "action": "post",
                      "data": [{"relationship_type": "mounts", "source": fresh_ids[0], "target": fresh_ids[1]}]})
    assert linked["counts"]["created"] == 1  # the ends live in partitions loaded from their snapshots

    worker2 = stack.metrics_url("worker2")
    ends, _ = topic_state(stack.brokers, names)
    assert sum(ends.values()) > history  # worker2 wrote changes after the snapshots...
    # ...and read none: the snapshots held everything before them, and it never reads back its own.
    assert scrape(worker2).value("bulkjobs_worker_changes_read_total", unit="messages") == 0
    restored = scrape(worker2).value("bulkjobs_worker_snapshot_read_total", unit="messages")
    assert restored >= len(manifests) * 2  # a manifest and a chunk at least, per partition


def test_a_worker_that_joins_loads_the_partitions_it_takes_from_snapshots_written_as_they_are_handed_over(
        make_stack: Callable[..., Stack]) -> None:
    stack, api, names, keyed = keyed_objects_made(make_stack)  # the timer's next snapshot is a minute away
    _, manifests = topic_state(stack.brokers, names)
    assert manifests == {}  # none yet: the timer's are not due

    stack.start("worker", name="worker2")
    wait_for(lambda: sorted(len(p) for p in worker_partitions(api)) == [4, 4], timeout=90, interval=0.5,
             what="two workers holding half of the partitions each")
    again = api.run({"type": "resources", "action": "external_id_set",
                     "data": [{**record, "attributes": {"v": 2}} for record in keyed]}, timeout=120)
    assert (again["status"], again["counts"]["updated"], again["counts"]["created"]) == ("succeeded", KEYED, 0)

    ends, manifests = topic_state(stack.brokers, names)
    assert len(manifests) == PARTITIONS  # handed over: each written before the rebalance assigned it
    worker2 = scrape(stack.metrics_url("worker2"))
    assert worker2.value("bulkjobs_worker_snapshot_read_total", unit="messages") >= 4 * 2  # manifest + chunk
    assert worker2.value("bulkjobs_worker_changes_read_total", unit="messages") == 0  # not the first job's
