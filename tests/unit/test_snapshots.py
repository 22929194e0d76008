"""Snapshots of the object index: encoding into chunks under the message limit, the restorer
finding the last complete snapshot from the end of a fake snapshot log, the writer's order and
schedule, and an ``ObjectState`` loading a partition from a snapshot then the changes after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import pytest

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.identity import derived_id
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.kafka.refetch import Entry
from bulkjobs.kafka.tail import OnMessage
from bulkjobs.kafka.topics import (
    MAX_VALUE_BYTES,
    AppliedBatch,
    SnapshotManifest,
    chunk_key,
    decode,
    encode,
    manifest_key,
)
from bulkjobs.streams.snapshots import (
    FIRST_WINDOW,
    QUIET_SECONDS,
    Snapshot,
    SnapshotRestorer,
    Snapshotter,
    encode_chunks,
    load_chunk,
)
from bulkjobs.streams.state import ObjectState

PARTITIONS = 4
TOPIC = "t-snapshots"
AT = "2026-01-01T00:00:00.000Z"


def ids(n: int, tenant: str = "acme", partition: int = 1) -> dict[str, str]:
    """``n`` derived ids of ``partition`` (its objects are those its router sends it)."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < n:
        object_id = derived_id(tenant, "server", f"srv-{i}")
        if int(object_id[:8], 16) % PARTITIONS == partition:
            found[object_id] = tenant
        i += 1
    return found


def restored(values: Iterable[bytes]) -> Snapshot:
    manifest = SnapshotManifest(partition=1, generation="1-a", changes_offset=0, chunk_keys=[], chunk_offsets=[], at=AT)
    snapshot = Snapshot(manifest=manifest)
    for value in values:
        load_chunk(value, snapshot)
    return snapshot


# --- encoding ------------------------------------------------------------------------------------


def test_chunks_hold_every_id_and_applied_entry_of_several_tenants() -> None:
    index = ObjectIndex(objects={**ids(30), **ids(20, tenant="globex")}, relationships=ids(7, tenant="rel"))
    applied = {("job-1", seq): Counts(processed=3, created=seq) for seq in range(25)}
    chunks = list(encode_chunks(index, applied, chunk_ids=10))
    assert len(chunks) == 6  # 57 ids then 25 entries, ten per chunk, side by side
    snapshot = restored(chunks)
    assert snapshot.index.objects == index.objects
    assert snapshot.index.relationships == index.relationships
    assert snapshot.applied == applied


def test_an_empty_index_is_one_empty_chunk() -> None:
    [chunk] = encode_chunks(ObjectIndex(), {})
    assert decode(chunk) == {"objects": {}, "relationships": {}, "applied": []}


@pytest.mark.parametrize("id_bytes", [MAX_VALUE_BYTES // 4, MAX_VALUE_BYTES // 2, MAX_VALUE_BYTES // 2 + 1])
def test_a_chunk_over_the_message_limit_is_split_until_each_part_fits(id_bytes: int) -> None:
    """Two ids of about a quarter of the limit fit in one chunk; two of half of it do not."""
    objects = {"a" * id_bytes: "acme", "b" * id_bytes: "acme"}
    chunks = list(encode_chunks(ObjectIndex(objects=objects), {}))
    assert all(len(chunk) <= MAX_VALUE_BYTES for chunk in chunks)
    assert len(chunks) == (1 if id_bytes < MAX_VALUE_BYTES // 2 - 100 else 2)
    assert restored(chunks).index.objects == objects


def test_one_id_over_the_message_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        list(encode_chunks(ObjectIndex(objects={"a" * MAX_VALUE_BYTES: "acme"}), {}))


# --- restoring -----------------------------------------------------------------------------------


class FakeLog:
    """A partition of the snapshots topic in memory, that counts what is read of it."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.read_offsets: list[int] = []

    async def publish(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                      partition: int | None = None) -> int:
        assert topic == TOPIC and partition == 1
        self.entries.append((len(self.entries), key, value))
        return len(self.entries) - 1

    async def end_offset(self, partition: int) -> int:
        return len(self.entries)

    async def read(self, partition: int, start: int, end: int) -> list[Entry]:
        self.read_offsets.extend(range(start, end))
        return self.entries[start:end]


class FakeTail:
    def __init__(self, on_message: OnMessage) -> None:
        self.deliver = on_message
        self.started = True
        self.wants: list[dict[int, int]] = []
        self.barriers: list[list[int]] = []
        self.unwanted: list[int] = []

    async def ensure_started(self, partitions: int, *, lazy: bool = False, from_end: bool = False) -> None:
        pass

    async def caught_up(self, partitions: Iterable[int], held: Callable[[int], bool] = lambda partition: False) -> None:
        self.barriers.append(sorted(partitions))

    async def fresh(self, age: float) -> None:
        pass

    def want(self, starts: Mapping[int, int]) -> None:
        self.wants.append(dict(starts))

    async def want_from_end(self, partitions: Iterable[int]) -> None:
        raise AssertionError("the object index reads a partition from its snapshot or its beginning")

    def unwant(self, partitions: Iterable[int]) -> None:
        self.unwanted.extend(partitions)


def state(log: FakeLog) -> tuple[ObjectState, FakeTail]:
    tails: list[FakeTail] = []

    def tail_of(on_message: OnMessage) -> FakeTail:
        tails.append(FakeTail(on_message))
        return tails[-1]

    objects = ObjectState(tail_of, PARTITIONS, SnapshotRestorer(log))
    return objects, tails[0]


def change(job_id: str, seq: int, ops: list[list[Any]]) -> bytes:
    return encode(AppliedBatch(job_id=job_id, tenant="acme", seq=seq, at=AT, counts={"processed": 1},
                               results=[], ops=ops))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def writer(objects: ObjectState, log: FakeLog, finished: Iterable[str] = (), every_changes: int = 3,
           every_seconds: float = 10.0, clock: Clock | None = None,
           running: Callable[[], bool] = lambda: False) -> Snapshotter:
    done = set(finished)
    return Snapshotter(objects=objects, publish=log.publish, topic=TOPIC, finished=done.__contains__,
                       running=running, every_changes=every_changes, every_seconds=every_seconds,
                       clock=clock or Clock(), now=lambda: AT)


async def applied_partition(log: FakeLog, objects: dict[str, str], changes: int = 5) -> ObjectState:
    """A state that owns partition 1, with ``objects`` created by changes 0..changes-1."""
    state_1, tail = state(log)
    await state_1.sync(1)
    items = list(objects.items())
    for offset in range(changes):
        ops = [["create", object_id, tenant] for object_id, tenant in items[offset::changes]]
        tail.deliver(1, offset, change("job-1", offset, ops))
    return state_1


async def test_a_partition_without_snapshot_is_read_from_its_beginning() -> None:
    log = FakeLog()
    objects, tail = state(log)
    await objects.sync(1)
    assert tail.wants == [{1: 0}] and tail.barriers == [[1]]
    assert log.read_offsets == []  # an empty snapshot partition: nothing read


async def test_a_new_owner_loads_the_snapshot_then_reads_the_changes_after_it_only() -> None:
    log = FakeLog()
    live = ids(50)
    before = await applied_partition(log, live)
    manifest = await writer(before, log).take(1)
    assert manifest is not None and manifest.changes_offset == 4

    after, tail = state(log)
    await after.sync(1)
    assert tail.wants == [{1: 5}]  # the changes after the snapshot's offset
    assert after.index_of(1).objects == live
    assert after.applied_counts(1, "job-1", 4) == Counts(processed=1)
    tail.deliver(1, 4, change("job-1", 4, [["delete", next(iter(live))]]))  # at or before: skipped
    assert after.index_of(1).objects == live
    gone = next(iter(live))
    tail.deliver(1, 5, change("job-2", 0, [["delete", gone]]))
    assert gone not in after.index_of(1).objects


async def test_the_writer_sends_chunks_then_the_manifest_then_tombstones_for_the_previous_generation() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(5))
    first = await writer(objects, log).take(1)
    assert first is not None
    objects.record(1, 5, AppliedBatch(job_id="job-1", tenant="acme", seq=5, at=AT, counts={}, results=[], ops=[]),
                   apply_ops=True)
    second = await writer(objects, log).take(1)
    assert second is not None and second.generation.startswith("2-")
    keys = [key for _, key, _ in log.entries]
    assert keys == [chunk_key(1, first.generation, 0).encode(), manifest_key(1),
                    chunk_key(1, second.generation, 0).encode(), manifest_key(1),
                    chunk_key(1, first.generation, 0).encode()]
    assert log.entries[-1][2] is None  # a tombstone
    assert second.chunk_offsets == [2] and second.changes_offset == 5


async def test_a_snapshot_cut_short_by_a_crash_is_ignored_for_the_previous_complete_one() -> None:
    log = FakeLog()
    live = ids(40)
    objects = await applied_partition(log, live)
    complete = await writer(objects, log).take(1)
    assert complete is not None
    # a crash after the chunks of the next snapshot, before its manifest: many orphan chunks
    for n in range(FIRST_WINDOW * 2):
        await log.publish(TOPIC, encode({"objects": {"acme": ["x"]}, "relationships": {}, "applied": []}),
                          key=chunk_key(1, "2-dead", n).encode(), partition=1)
    snapshot = await SnapshotRestorer(log).latest(1)
    assert snapshot is not None and snapshot.manifest == complete
    assert snapshot.index.objects == live


async def test_the_restorer_reads_back_from_the_end_not_the_whole_history() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(10))
    snapshotter = writer(objects, log)
    for offset in range(5, 105):  # a hundred snapshots, one change apart
        objects.record(1, offset, AppliedBatch(job_id="j", tenant="acme", seq=offset, at=AT, counts={},
                                               results=[], ops=[]), apply_ops=False)
        await snapshotter.take(1)
    snapshot = await SnapshotRestorer(log).latest(1)
    assert snapshot is not None and snapshot.manifest.changes_offset == 104
    assert len(log.read_offsets) == FIRST_WINDOW < len(log.entries)
    assert snapshot.messages == FIRST_WINDOW


async def test_a_chunk_that_is_not_where_its_manifest_says_fails_the_restore() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(3))
    manifest = await writer(objects, log).take(1)
    assert manifest is not None
    log.entries[0] = (0, b"1/other/0", log.entries[0][2])
    with pytest.raises(ValueError, match="is not at offset 0"):
        await SnapshotRestorer(log).latest(1)


# --- the applied map -----------------------------------------------------------------------------


async def test_a_snapshot_drops_the_applied_entries_of_finished_jobs_from_memory_and_from_itself() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(4), changes=2)
    objects.record(1, 2, AppliedBatch(job_id="job-2", tenant="acme", seq=0, at=AT, counts={"processed": 2},
                                      results=[], ops=[]), apply_ops=False)
    await writer(objects, log, finished=["job-1"]).take(1)
    assert objects.applied[1] == {("job-2", 0): Counts(processed=2)}
    snapshot = await SnapshotRestorer(log).latest(1)
    assert snapshot is not None and snapshot.applied == {("job-2", 0): Counts(processed=2)}


# --- when -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "due"), [(2, False), (3, True), (4, True)])
async def test_a_partition_is_due_after_so_many_changes(changes: int, due: bool) -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8), changes=changes)
    assert writer(objects, log, every_changes=3).due(1) is due


def a_change(objects: ObjectState, offset: int) -> None:
    objects.record(1, offset, AppliedBatch(job_id="j", tenant="acme", seq=offset, at=AT, counts={}, results=[],
                                           ops=[]), apply_ops=False)


async def just_snapshotted(every_changes: int, every_seconds: float = 10.0,
                           running: Callable[[], bool] = lambda: False) -> tuple[ObjectState, Snapshotter, Clock]:
    """Partition 1 with one change, snapshotted at clock 0 by a snapshotter of these settings."""
    log, clock = FakeLog(), Clock()
    objects = await applied_partition(log, ids(8), changes=1)
    snapshotter = writer(objects, log, every_changes=every_changes, every_seconds=every_seconds, clock=clock,
                         running=running)
    await snapshotter.take(1)
    return objects, snapshotter, clock


@pytest.mark.parametrize(("seconds", "due"), [(9.9, False), (10.0, True), (10.1, True)])
async def test_a_partition_with_a_change_is_due_so_long_after_its_last_snapshot(seconds: float, due: bool) -> None:
    objects, snapshotter, clock = await just_snapshotted(every_changes=100)
    a_change(objects, 1)
    assert not snapshotter.due(1)  # a look sees the change
    clock.now = seconds
    assert snapshotter.due(1) is due


@pytest.mark.parametrize(("quiet", "due"), [(QUIET_SECONDS - 0.1, False), (QUIET_SECONDS, True),
                                            (QUIET_SECONDS + 0.1, True)])
async def test_a_partition_due_by_time_waits_until_its_changes_pause(quiet: float, due: bool) -> None:
    objects, snapshotter, clock = await just_snapshotted(every_changes=100, every_seconds=60.0)
    for offset, now in enumerate((0.0, 30.0, 60.0, 90.0), start=1):  # a job under way: a change at every look
        clock.now = now
        a_change(objects, offset)
        assert not snapshotter.due(1)
    clock.now = 90.0 + quiet
    assert snapshotter.due(1) is due


async def test_a_partition_due_by_time_waits_until_no_job_runs() -> None:
    jobs = {"running": True}
    objects, snapshotter, clock = await just_snapshotted(every_changes=100, running=lambda: jobs["running"])
    a_change(objects, 1)
    assert not snapshotter.due(1)
    clock.now = 60.0  # long after the last snapshot, and quiet for long: a job still runs (the next one, say)
    assert not snapshotter.due(1)
    jobs["running"] = False
    assert snapshotter.due(1)


async def test_a_partition_is_due_by_its_count_of_changes_while_jobs_run() -> None:
    objects, snapshotter, clock = await just_snapshotted(every_changes=2, running=lambda: True)
    a_change(objects, 1)
    assert not snapshotter.due(1)
    a_change(objects, 2)
    assert snapshotter.due(1)


async def test_a_partition_that_never_pauses_is_due_by_its_count_of_changes() -> None:
    objects, snapshotter, clock = await just_snapshotted(every_changes=50)
    for offset in range(1, 50):
        clock.now = offset * 1.0
        a_change(objects, offset)
        assert not snapshotter.due(1), offset
    clock.now = 50.0
    a_change(objects, 50)
    assert snapshotter.due(1)


@pytest.mark.parametrize(("quiet", "due"), [(0.9, False), (1.0, True)])
async def test_a_timer_shorter_than_the_pause_waits_for_a_pause_as_long_as_itself(quiet: float, due: bool) -> None:
    objects, snapshotter, clock = await just_snapshotted(every_changes=100, every_seconds=1.0)
    clock.now = 5.0
    a_change(objects, 1)
    assert not snapshotter.due(1)
    clock.now = 5.0 + quiet
    assert snapshotter.due(1) is due


async def test_a_partition_without_a_change_since_its_snapshot_is_never_due() -> None:
    log = FakeLog()
    clock = Clock()
    objects = await applied_partition(log, ids(8), changes=1)
    snapshotter = writer(objects, log, every_changes=1, clock=clock)
    await snapshotter.look([1])
    clock.now = 1000.0
    assert not snapshotter.due(1)
    await snapshotter.look([1])
    assert [key for _, key, _ in log.entries].count(manifest_key(1)) == 1


async def test_only_caught_up_partitions_are_snapshotted() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8))
    objects.revoke({1})
    await writer(objects, log, every_changes=1).look([1])
    assert log.entries == []


@pytest.mark.parametrize(("dry_run_ended", "snapshotted"), [(False, False), (True, True)])
async def test_a_partition_with_a_running_dry_run_waits_for_its_end(dry_run_ended: bool, snapshotted: bool) -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8))
    objects.dry_runs.of("dry-1", 1)  # the run's overlay holds would-be ops older than any snapshot now
    await writer(objects, log, finished=["dry-1"] if dry_run_ended else [], every_changes=1).look([1])
    assert ([key for _, key, _ in log.entries].count(manifest_key(1)) == 1) is snapshotted
    assert bool(objects.dry_runs) is not dry_run_ended


async def test_a_partition_revoked_during_its_snapshot_gets_no_manifest() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8))
    publish = log.publish

    async def revoking(topic: str, value: bytes | None, *, key: bytes | None = None,
                       partition: int | None = None) -> int:
        objects.revoke({1})
        return await publish(topic, value, key=key, partition=partition)

    snapshotter = writer(objects, log)
    snapshotter.publish = revoking
    assert await snapshotter.take(1) is None
    assert manifest_key(1) not in [key for _, key, _ in log.entries]


@pytest.mark.parametrize(("changed", "dry_run", "caught_up", "snapshotted"), [
    (True, False, True, True),  # not due (100 changes, 10 s), but its next owner would read them all
    (False, False, True, False),  # its last snapshot holds everything
    (True, True, True, False),  # a dry run's overlay would be lost
    (True, False, False, False),  # never caught up since assigned: the index may miss changes
])
async def test_a_partition_revoked_in_a_rebalance_is_handed_over_with_a_snapshot_if_it_changed(
        changed: bool, dry_run: bool, caught_up: bool, snapshotted: bool) -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8), changes=1)
    snapshotter = writer(objects, log, every_changes=100)
    await snapshotter.take(1)
    if changed:
        objects.record(1, 1, AppliedBatch(job_id="j", tenant="acme", seq=1, at=AT, counts={}, results=[],
                                          ops=[["create", "new-id", "acme"]]), apply_ops=True)
    if dry_run:
        objects.dry_runs.of("dry-1", 1)
    if not caught_up:
        objects.revoke({1})
    assert not snapshotter.due(1)
    await snapshotter.hand_over([1])
    manifests = [orjson.loads(value) for _, key, value in log.entries if key == manifest_key(1) and value]
    assert len(manifests) == (2 if snapshotted else 1)
    assert manifests[-1]["changes_offset"] == (1 if snapshotted else 0)


async def test_a_hand_over_waits_for_a_snapshot_under_way() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8))
    snapshotter = writer(objects, log)
    with objects.applying():  # the timer's snapshot waits for the batch in flight...
        timer = asyncio.create_task(snapshotter.take(1))
        await asyncio.sleep(0.01)
        hand_over = asyncio.create_task(snapshotter.hand_over([1]))
        await asyncio.sleep(0.01)
    await asyncio.gather(timer, hand_over)
    # ...and the hand-over, behind it, finds nothing new since: one snapshot, not two interleaved.
    assert [key for _, key, _ in log.entries].count(manifest_key(1)) == 1


async def test_a_snapshot_waits_until_no_batch_is_between_its_apply_and_its_ack() -> None:
    log = FakeLog()
    objects = await applied_partition(log, ids(8))
    with objects.applying():
        objects.index_of(1).objects["in-flight"] = "acme"  # applied, its AppliedBatch not acked yet
        taking = asyncio.create_task(writer(objects, log).take(1))
        await asyncio.sleep(0.01)
        assert not taking.done() and log.entries == []
        objects.record(1, 5, AppliedBatch(job_id="job-9", tenant="acme", seq=0, at=AT, counts={}, results=[],
                                          ops=[]), apply_ops=False)
    manifest = await taking
    assert manifest is not None and manifest.changes_offset == 5
    [(_, _, chunk)] = [entry for entry in log.entries if entry[1] != manifest_key(1)]
    assert chunk is not None and "in-flight" in orjson.loads(chunk)["objects"]["acme"]


async def test_a_snapshot_that_cannot_be_read_falls_back_to_the_changes_from_the_beginning() -> None:
    log = FakeLog()
    await log.publish(TOPIC, b"not json", key=manifest_key(1), partition=1)
    objects, tail = state(log)
    await objects.sync(1)
    assert tail.wants == [{1: 0}] and objects.manifests == {}


# --- preloading at assignment ---------------------------------------------------------------------


class HeldLog(FakeLog):
    """A snapshots partition whose reads wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def end_offset(self, partition: int) -> int:
        self.reading.set()
        await self.go.wait()
        return await super().end_offset(partition)


async def nothing() -> None:
    pass


async def test_an_assigned_partition_is_loaded_from_its_snapshot_before_its_first_batch() -> None:
    log = FakeLog()
    live = ids(20)
    await writer(await applied_partition(log, live), log).take(1)
    objects, tail = state(log)
    ready: list[bool] = []

    async def start_tail() -> None:
        ready.append(True)

    preloading = objects.preload({1}, start_tail)
    assert preloading is not None
    await preloading
    assert ready == [True] and tail.wants == [{1: 5}] and objects.index_of(1).objects == live
    assert tail.barriers == [[1]] and 1 in objects.synced and tail.unwanted == [1]  # caught up, let go
    read = len(log.read_offsets)
    await objects.sync(1)  # the first batch: neither the snapshot nor the changes are read again
    assert len(log.read_offsets) == read and tail.wants == [{1: 5}] and tail.barriers == [[1]]


async def test_nothing_assigned_preloads_nothing() -> None:
    objects, tail = state(FakeLog())
    assert objects.preload(set(), nothing) is None
    assert tail.wants == []


async def test_a_rebalance_stops_a_preload_under_way_and_the_first_batch_loads_the_partition() -> None:
    log = HeldLog()
    objects, tail = state(log)
    preloading = objects.preload({1}, nothing)
    assert preloading is not None
    await log.reading.wait()
    objects.revoke({1})
    objects.assign(set())
    log.go.set()
    with pytest.raises(asyncio.CancelledError):
        await preloading
    assert tail.wants == [] and 1 not in objects.parts and not objects.synced  # nothing of a partition now gone
    await objects.sync(1)  # given back later: its first batch loads it
    assert tail.wants == [{1: 0}] and objects.synced == {1}


async def test_a_preload_that_fails_leaves_the_partition_to_its_first_batch() -> None:
    objects, tail = state(FakeLog())

    async def tail_down() -> None:
        raise ConnectionError("broker down")

    preloading = objects.preload({1}, tail_down)
    assert preloading is not None
    await preloading  # logged, not raised
    assert tail.wants == []
    await objects.sync(1)
    assert tail.wants == [{1: 0}]
