"""The worker's orchestration without a broker: the applier, the tracker, the scheduler, the
upload watch and the expiry, handed a fake publisher and state whose tails are always caught up.

Each fake writes to one list of effects, so a test reads the order in which things happened:
the barriers, then what was published where.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.identity import RELATIONSHIPS, RESOURCES
from bulkjobs.domain.jobs import (
    CANCELLED,
    DELETED,
    FAILED,
    PROCESSING,
    QUEUED,
    SCHEDULED,
    SUCCEEDED,
    SUSPENDED,
    UPLOAD_INTERRUPTED,
    Job,
)
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.kafka.tail import OnMessage
from bulkjobs.kafka.topics import (
    AppliedBatch,
    BatchParked,
    JobCommand,
    JobSubmitted,
    RecordBatch,
    SnapshotManifest,
    TopicNames,
    encode,
    job_from_status,
)
from bulkjobs.settings import Settings
from bulkjobs.streams.applier import BatchApplier
from bulkjobs.streams.effects import Message
from bulkjobs.streams.expiry import MAX_DELETES_PER_LOOK, Expiry
from bulkjobs.streams.rules import next_job, released
from bulkjobs.streams.scheduler import Scheduler
from bulkjobs.streams.snapshots import Snapshot
from bulkjobs.streams.state import JobCommands, JobStates, ObjectState
from bulkjobs.streams.tracker import JobTracker
from bulkjobs.streams.uploads import UploadClock, UploadWatch

NAMES = TopicNames("t")
PARTITIONS = 4
AT = "2026-01-01T00:00:00.000Z"
HOST = "host-1"
TENANT = "acme"
FRESH = "0123456789abcdef0123456789abcdef"

Effect = tuple[Any, ...]


class FakeTail:
    """A tail that is always caught up: it notes each barrier the orchestration waits for, and
    hands on the messages a test delivers as if read from the topic."""

    def __init__(self, effects: list[Effect], name: str, on_message: OnMessage) -> None:
        self.effects, self.name, self.deliver = effects, name, on_message
        self.started = True

    async def ensure_started(self, partitions: int, *, lazy: bool = False, from_end: bool = False) -> None:
        pass

    async def caught_up(self, partitions: Iterable[int], held: Callable[[int], bool] = lambda partition: False) -> None:
        self.effects.append(("caught_up", self.name, sorted(partitions)))

    async def fresh(self, age: float) -> None:
        self.effects.append(("fresh", self.name))

    def want(self, starts: Mapping[int, int]) -> None:
        self.effects.append(("want", self.name, dict(starts)))

    async def want_from_end(self, partitions: Iterable[int]) -> None:
        self.effects.append(("want_from_end", self.name, sorted(partitions)))

    def unwant(self, partitions: Iterable[int]) -> None:
        self.effects.append(("unwant", self.name, sorted(partitions)))


class Snapshots:
    """The latest snapshot of each partition, as a test sets it (none by default)."""

    def __init__(self) -> None:
        self.by_partition: dict[int, Snapshot] = {}

    async def latest(self, partition: int) -> Snapshot | None:
        return self.by_partition.get(partition)


class Worker:
    """The orchestration of one worker, wired as ``worker.py`` wires it, to fakes."""

    def __init__(self, settings: Settings | None = None, snapshots: Snapshots | None = None) -> None:
        settings = settings or Settings(partitions=PARTITIONS)
        self.effects: list[Effect] = []
        self.parked: dict[tuple[int, int], bytes] = {}  # the batches topic, for the refetcher
        # the held topic: (partition, offset, key, value) of each record, tombstones too
        self.held: list[tuple[int, int, bytes | None, bytes | None]] = []
        self.next_offset = 100
        self.seconds = 0.0
        self.tails: dict[str, FakeTail] = {}
        self.objects = ObjectState(lambda on_message: self.tail("changes", on_message), PARTITIONS,
                                   snapshots or Snapshots())
        self.job_states = JobStates(lambda on_message: self.tail("status", on_message))
        self.commands = JobCommands(lambda on_message: self.tail("job-events", on_message))
        self.uploads = UploadClock(settings.upload_timeout, clock=lambda: self.seconds)
        self.applier = BatchApplier(publish=self.publish, dead_letter=self.dead_letter, topics=NAMES,
                                    partitions=PARTITIONS, objects=self.objects, job_states=self.job_states,
                                    commands=self.commands, host=HOST, now=lambda: AT)
        self.tracker = JobTracker(publish=self.publish, send=self.send, dead_letter=self.dead_letter, topics=NAMES,
                                  settings=settings, job_states=self.job_states, batches=self,
                                  held=self, uploads=self.uploads, now=lambda: AT)

    def tail(self, name: str, on_message: OnMessage) -> FakeTail:
        self.tails[name] = FakeTail(self.effects, name, on_message)
        return self.tails[name]

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      partition: int | None = None) -> int:
        self.effects.append(("publish", topic, orjson.loads(value), key, partition))
        self.next_offset += 1
        self._keep(topic, value, key, partition)
        return self.next_offset

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                   partition: int | None = None) -> None:
        self.effects.append(("send", topic, None if value is None else orjson.loads(value), key, partition))
        self.next_offset += 1
        self._keep(topic, value, key, partition)

    def _keep(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None) -> None:
        if topic == NAMES.held:
            assert partition is not None
            self.held.append((partition, self.next_offset, key, value))

    async def dead_letter(self, message: Message, reason: str) -> None:
        self.effects.append(("dead_letter", message, reason))

    async def fetch(self, partition: int, offset: int) -> bytes:
        return self.parked[(partition, offset)]

    async def fetch_copy(self, partition: int, offset: int, key: bytes) -> bytes | None:
        """As the held topic reads once compacted: the latest record under ``key``, if it is at
        ``offset`` or after (a tombstone: None)."""
        under_key = [(at, value) for p, at, k, value in self.held if (p, k) == (partition, key)]
        at, value = under_key[-1] if under_key else (-1, None)
        return value if at >= offset else None

    def held_copies(self) -> dict[bytes, bytes]:
        """What compaction would leave of the held topic: the latest value of each key, tombstones gone."""
        latest = {key: value for _, _, key, value in self.held if key is not None}
        return {key: value for key, value in latest.items() if value is not None}

    def published(self) -> list[Effect]:
        return [effect for effect in self.effects if effect[0] in ("publish", "send", "dead_letter")]

    def statuses(self) -> list[Job]:
        return [job_from_status(effect[2]) for effect in self.effects if effect[0] == "send" and effect[2] is not None]

    def events(self) -> list[dict[str, Any]]:
        """What was published to the job events, in order."""
        return [effect[2] for effect in self.effects if effect[0] == "publish" and effect[1] == NAMES.job_events]

    async def track(self, event: Any, partition: int = 0) -> None:
        await self.tracker.handle(Message(NAMES.job_events, partition, 0, event.job_id.encode(), encode(event)))


def a_batch(job_id: str = "job-1", seq: int = 0, **fields: Any) -> RecordBatch:
    return RecordBatch(job_id=job_id, tenant=TENANT, type=RESOURCES, action="post", seq=seq,
                       items=[[0, FRESH, {"type": "server"}]], **fields)


def batch_message(batch: RecordBatch | bytes, partition: int = 2, offset: int = 7) -> Message:
    value = batch if isinstance(batch, bytes) else encode(batch)
    return Message(NAMES.batches, partition, offset, None, value)


def submitted(job_id: str = "job-1", batches: int = 1, **fields: Any) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, tenant=TENANT, type=RESOURCES, action="post", description=None,
                        total=batches, batches=batches, created_at=AT, **fields)


def command(kind: str, job_id: str = "job-1", **fields: Any) -> JobCommand:
    return JobCommand(job_id=job_id, tenant=TENANT, kind=kind, at=AT, **fields)


# --- the batch applier ---------------------------------------------------------------------------


async def test_a_batch_is_applied_then_its_applied_batch_then_its_batch_done_are_published() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch()))
    barriers = [effect for effect in worker.effects if effect[0] in ("want", "caught_up", "unwant", "fresh")]
    assert barriers == [("want", "changes", {2: 0}), ("caught_up", "changes", [2]),
                        ("unwant", "changes", [2]),  # caught up: from now on its only writer is this worker
                        ("caught_up", "status", [0, 1, 2, 3]), ("fresh", "job-events")]
    (_, changes, applied, _, partition), (_, events, done, key, _) = worker.published()
    assert (changes, partition) == (NAMES.changes, 2)  # the same partition as the batch
    assert applied["job_id"] == "job-1" and applied["counts"]["created"] == 1 and applied["host"] == HOST
    assert (events, key) == (NAMES.job_events, b"job-1")
    assert done == {"kind": "batch_done", "job_id": "job-1", "seq": 0, "counts": applied["counts"], "at": AT,
                    "host": HOST}
    assert worker.objects.index_of(2).objects == {FRESH: TENANT}
    assert worker.objects.applied_counts(2, "job-1", 0) == Counts(processed=1, created=1)
    assert worker.objects.offsets[2] == 101  # where its AppliedBatch landed: read from there if given back


async def test_a_redelivered_batch_only_sends_its_batch_done_again() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch()))
    first_done = worker.published()[-1]
    worker.effects.clear()
    await worker.applier.handle(batch_message(a_batch()))
    assert worker.published() == [first_done]


async def test_a_batch_applied_before_a_crash_only_sends_its_batch_done_again() -> None:
    """The new owner learns the batch from the changes topic (its tail), not from memory."""
    before = Worker()
    await before.applier.handle(batch_message(a_batch()))
    applied = AppliedBatch(**before.published()[0][2])
    after = Worker()
    after.tails["changes"].deliver(2, 50, encode(applied))
    await after.applier.handle(batch_message(a_batch()))
    [(_, topic, done, _, _)] = after.published()
    assert topic == NAMES.job_events and done["kind"] == "batch_done" and done["counts"] == applied.counts
    assert after.effects[:2] == [("want", "changes", {2: 0}), ("caught_up", "changes", [2])]  # before the check


async def test_a_batch_applied_before_a_snapshot_is_recognised_by_a_worker_restored_from_it() -> None:
    """The entry travels in the snapshot: the new owner never reads the change that recorded it."""
    snapshots = Snapshots()
    manifest = SnapshotManifest(partition=2, generation="1-a", changes_offset=40, chunk_keys=[], chunk_offsets=[],
                                at=AT)
    snapshots.by_partition[2] = Snapshot(manifest=manifest, index=ObjectIndex(objects={FRESH: TENANT}),
                                         applied={("job-1", 0): Counts(processed=1, created=1)})
    after = Worker(snapshots=snapshots)
    await after.applier.handle(batch_message(a_batch()))
    [(_, topic, done, _, _)] = after.published()
    assert topic == NAMES.job_events and done["kind"] == "batch_done" and done["counts"]["created"] == 1
    assert after.effects[0] == ("want", "changes", {2: 41})
    assert after.objects.index_of(2).objects == {FRESH: TENANT}


@pytest.mark.parametrize("stop", ["status", "command"])
async def test_a_batch_of_a_stopped_job_is_skipped(stop: str) -> None:
    worker = Worker()
    if stop == "status":
        worker.job_states.put(Job(id="job-1", tenant=TENANT, status=CANCELLED), 0)
    else:  # a cancel the command tail read before the tracker applied it
        worker.tails["job-events"].deliver(0, 0, encode(command("cancel")))
    await worker.applier.handle(batch_message(a_batch()))
    assert worker.published() == []
    assert worker.objects.live_ids() == (0, 0)


@pytest.mark.parametrize("status", [jobs.SUCCEEDED, jobs.PARTIALLY_SUCCEEDED])
async def test_a_batch_of_a_job_that_counted_all_its_batches_is_a_duplicate_even_without_its_entry(
        status: str) -> None:
    """The applied entries of ended jobs are pruned at a snapshot: the job's state recognises
    a late duplicate instead, without applying it or counting it again."""
    worker = Worker()
    worker.job_states.put(Job(id="job-1", tenant=TENANT, status=status), 0)
    await worker.applier.handle(batch_message(a_batch()))
    assert worker.published() == []
    assert worker.objects.live_ids() == (0, 0)


async def test_a_partition_lost_in_a_rebalance_is_forgotten_and_loaded_again_if_it_comes_back() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch(), partition=2))
    worker.objects.revoke({2})
    worker.objects.assign({1})
    assert worker.objects.live_ids() == (0, 0) and worker.objects.applied_counts(2, "job-1", 0) is None
    worker.effects.clear()
    worker.objects.revoke({1})
    worker.objects.assign({1, 2})
    await worker.objects.sync(2)
    assert worker.effects == [("want", "changes", {2: 0}), ("caught_up", "changes", [2]), ("unwant", "changes", [2])]


async def test_a_partition_given_back_after_a_rebalance_is_read_again_after_the_workers_last_change() -> None:
    """The tail stopped reading the partition once synced (this worker wrote it alone); when
    the partition comes back, another worker may have written it meanwhile."""
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch(), partition=2))  # its AppliedBatch lands at 101
    worker.objects.revoke({2})
    worker.objects.assign({2})
    worker.effects.clear()
    await worker.applier.handle(batch_message(a_batch(seq=1), partition=2))
    assert worker.effects[:3] == [("want", "changes", {2: 102}), ("caught_up", "changes", [2]),
                                  ("unwant", "changes", [2])]
    assert worker.objects.index_of(2).objects == {FRESH: TENANT}  # kept: only what came after is read


@pytest.mark.parametrize("hold", ["batch", "status", "command"])
async def test_a_held_batch_is_parked_not_applied(hold: str) -> None:
    worker = Worker()
    batch = a_batch(hold=hold == "batch")
    if hold == "status":
        worker.job_states.put(Job(id="job-1", tenant=TENANT, status=SUSPENDED), 0)
    elif hold == "command":
        worker.tails["job-events"].deliver(0, 0, encode(command("suspend")))
    await worker.applier.handle(batch_message(batch, partition=3, offset=9))
    copy, parked = worker.published()  # the copy is in Kafka before the tracker hears of it
    assert copy == ("publish", NAMES.held, orjson.loads(encode(batch)), b"job-1/0/9", 3)
    [(_, copied_at, _, _)] = worker.held
    assert parked == ("publish", NAMES.job_events, {"kind": "batch_parked", "job_id": "job-1", "seq": 0,
                                                   "partition": 3, "offset": copied_at, "origin": 9}, b"job-1", None)
    assert worker.objects.live_ids() == (0, 0)


async def test_a_relationships_post_waits_until_every_partition_is_read() -> None:
    worker = Worker()
    batch = replace(a_batch(), type=RELATIONSHIPS)
    await worker.applier.handle(batch_message(batch))
    # Partition 2, the batch's, was synced first and holds everything already.
    assert ("caught_up", "changes", [0, 1, 3]) in worker.effects
    assert worker.effects.index(("caught_up", "changes", [0, 1, 3])) < worker.effects.index(worker.published()[0])


async def test_a_relationships_post_reads_again_a_partition_let_go_and_revoked_since() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch(), partition=2))
    worker.objects.revoke({2})
    worker.effects.clear()
    await worker.applier.handle(batch_message(replace(a_batch(seq=1), type=RELATIONSHIPS), partition=1))
    assert ("want", "changes", {2: 102}) in worker.effects
    assert ("caught_up", "changes", [0, 2, 3]) in worker.effects  # 1 synced first; 2 is not its own now


async def test_an_unreadable_batch_goes_to_the_dead_letters_and_fails_its_job() -> None:
    worker = Worker()
    message = batch_message(orjson.dumps({"job_id": "job-1", "tenant": TENANT}))
    await worker.applier.handle(message)
    (_, letter, reason), (_, topic, fail, key, _) = worker.published()
    assert letter == message and reason.startswith("unreadable record batch")
    assert (topic, key) == (NAMES.job_events, b"job-1")
    assert fail["kind"] == "fail" and fail["tenant"] == ""
    assert fail["reason"].startswith("a batch of the job could not be read")


async def test_an_error_handling_a_batch_fails_its_job_and_the_stream_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker()

    async def broken(partition: int) -> None:
        raise RuntimeError("no broker")

    worker.objects.sync = broken  # type: ignore[method-assign]
    await worker.applier.handle(batch_message(a_batch()))
    [(_, topic, fail, key, _)] = worker.published()
    assert (topic, key, fail["kind"], fail["tenant"]) == (NAMES.job_events, b"job-1", "fail", TENANT)
    assert fail["reason"] == "a batch of the job could not be applied: RuntimeError('no broker')"
    [logged] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert (vars(logged)["job_id"], vars(logged)["tenant"]) == ("job-1", TENANT)  # in a JSON log line


async def test_an_error_in_the_whole_batch_fails_each_record_and_still_publishes() -> None:
    worker = Worker()
    batch = replace(a_batch(), items=[[0, FRESH]])  # too short to unpack
    await worker.applier.handle(batch_message(batch))
    (_, _, applied, _, _), (_, _, done, _, _) = worker.published()
    assert applied["counts"]["failed"] == 1 and done["counts"]["failed"] == 1


# --- the job tracker -----------------------------------------------------------------------------


async def test_the_tracker_folds_an_event_and_sends_the_status_to_the_same_partition() -> None:
    worker = Worker()
    await worker.track(submitted(), partition=3)
    assert worker.effects[0] == ("caught_up", "status", [3])  # the partition's jobs are known first
    [(_, topic, status, key, partition)] = worker.published()
    assert (topic, key, partition) == (NAMES.status, b"job-1", 3)
    assert status["status"] == QUEUED and status["batches"] == 1
    assert worker.job_states.get("job-1").tenant == TENANT and worker.job_states.partitions["job-1"] == 3


async def test_a_batch_parked_by_an_older_version_is_released_from_the_batches_topic_on_resume() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    parked = encode(a_batch(hold=False))
    worker.parked[(2, 7)] = parked
    await worker.track(BatchParked(job_id="job-1", seq=0, partition=2, offset=7))
    assert worker.statuses()[-1].parked == [[2, 7]]
    worker.effects.clear()
    await worker.track(command("resume"))
    [(_, topic, batch, _, partition), (_, status_topic, status, _, _)] = worker.published()
    assert (topic, partition) == (NAMES.batches, 2)  # sent again to the partition that owns it
    assert RecordBatch(**batch) == a_batch()
    assert status_topic == NAMES.status and status["parked"] == [] and status["status"] == QUEUED


async def test_a_batch_parked_by_an_older_version_after_the_resume_is_sent_on_at_once() -> None:
    worker = Worker()
    await worker.track(submitted())
    worker.parked[(1, 4)] = encode(a_batch(hold=True))
    worker.effects.clear()
    await worker.track(BatchParked(job_id="job-1", seq=0, partition=1, offset=4))
    [(_, topic, batch, _, partition)] = worker.published()  # no status: the job did not change
    assert (topic, partition, batch["hold"]) == (NAMES.batches, 1, False)


async def test_a_cancel_drops_the_parked_batches() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await worker.track(BatchParked(job_id="job-1", seq=0, partition=2, offset=7))
    worker.effects.clear()
    await worker.track(command("cancel"))
    [(_, topic, status, _, _)] = worker.published()
    assert topic == NAMES.status and status["status"] == CANCELLED and status["parked"] == []
    assert "job-1" in worker.job_states.stopped


async def park(worker: Worker, batch: RecordBatch, offset: int = 9) -> None:
    """Hand the batch to the applier (which parks it), then its ``BatchParked`` to the tracker."""
    await worker.applier.handle(batch_message(batch, partition=2, offset=offset))
    [parked] = [event for event in worker.events() if event["kind"] == "batch_parked"][-1:]
    await worker.track(BatchParked(**parked))


def sent_to(worker: Worker, topic: str) -> list[Effect]:
    return [effect for effect in worker.published() if effect[1] == topic]


async def test_a_suspended_jobs_batch_is_released_from_its_held_copy_and_the_copy_dropped_after() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await park(worker, a_batch(hold=False))
    assert worker.statuses()[-1].parked == [[2, worker.held[0][1], 0, 9]]
    assert list(worker.held_copies()) == [b"job-1/0/9"]
    worker.effects.clear()
    await worker.track(command("resume"))  # the batches topic (worker.parked) is not read: it may have expired
    (_, topic, batch, _, partition), tombstone, (_, status_topic, status, _, _) = worker.published()
    assert (topic, partition, RecordBatch(**batch)) == (NAMES.batches, 2, a_batch())
    assert tombstone == ("send", NAMES.held, None, b"job-1/0/9", 2)  # only once it is sent on
    assert status_topic == NAMES.status and status["parked"] == [] and status["status"] == QUEUED
    assert worker.held_copies() == {}


async def test_a_resume_redelivered_after_its_copies_were_dropped_sends_nothing_twice() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await park(worker, a_batch(hold=False))
    suspended = worker.job_states.get("job-1")
    await worker.track(command("resume"))
    worker.job_states.put(suspended, 0)  # a crash before the resumed status was kept
    worker.effects.clear()
    await worker.track(command("resume"))
    assert sent_to(worker, NAMES.batches) == []  # its batch went on the first time
    assert sent_to(worker, NAMES.held) == [("send", NAMES.held, None, b"job-1/0/9", 2)]  # dropped again: harmless
    assert worker.statuses()[-1].status == QUEUED and worker.statuses()[-1].parked == []


async def test_a_batch_parked_again_after_a_crash_is_kept_once_and_sent_once() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await park(worker, a_batch(hold=False))
    await park(worker, a_batch(hold=False))  # redelivered: copied again under the same key
    copies = [at for _, at, _, _ in worker.held]
    assert worker.statuses()[-1].parked == [[2, copies[-1], 0, 9]]
    assert sent_to(worker, NAMES.held)[-1][0] == "publish"  # no tombstone: its key holds the newer copy
    worker.effects.clear()
    await worker.track(command("resume"))
    assert [RecordBatch(**batch) for _, _, batch, _, _ in sent_to(worker, NAMES.batches)] == [a_batch()]
    assert worker.held_copies() == {}


async def test_a_batch_sent_on_and_parked_again_has_a_copy_that_the_first_ones_tombstone_cannot_drop() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await park(worker, a_batch(hold=False), offset=9)
    await worker.track(command("resume"))  # sent on (to offset 30, say), then suspended again
    await worker.track(command("suspend"))
    await park(worker, a_batch(hold=False), offset=30)
    assert list(worker.held_copies()) == [b"job-1/0/30"]
    worker.effects.clear()
    await worker.track(command("resume"))
    assert [RecordBatch(**batch) for _, _, batch, _, _ in sent_to(worker, NAMES.batches)] == [a_batch()]


@pytest.mark.parametrize("end", ["cancel", "fail"])
async def test_the_held_copies_of_a_job_that_ends_are_dropped(end: str) -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await park(worker, a_batch(hold=False))
    worker.effects.clear()
    await worker.track(command(end, reason="stopped"))
    assert worker.statuses()[-1].terminal and worker.held_copies() == {}
    assert sent_to(worker, NAMES.batches) == []


async def test_a_copy_parked_after_the_resume_is_sent_on_at_once_then_dropped() -> None:
    worker = Worker()
    await worker.track(submitted(suspended=True))
    await worker.applier.handle(batch_message(a_batch(), partition=2, offset=9))  # parked before the resume...
    await worker.track(command("resume"))
    [parked] = [event for event in worker.events() if event["kind"] == "batch_parked"]
    worker.effects.clear()
    await worker.track(BatchParked(**parked))  # ...heard by the tracker after it
    (_, topic, batch, _, _), tombstone = worker.published()
    assert (topic, RecordBatch(**batch)) == (NAMES.batches, a_batch())
    assert tombstone == ("send", NAMES.held, None, b"job-1/0/9", 2) and worker.held_copies() == {}


async def test_every_run_of_a_definition_reads_its_held_copies_until_the_last_run_drops_them() -> None:
    worker = Worker()
    await worker.track(submitted("def-1", schedule={"cron": "* * * * *", "runs": 2}))
    await park(worker, a_batch("def-1", hold=True))
    for run, due in enumerate(["2026-01-01T00:01:00.000Z", "2026-01-01T00:02:00.000Z"]):
        worker.effects.clear()
        await worker.track(command("fire", "def-1", due=due))
        [(_, _, copy, _, _)] = sent_to(worker, NAMES.batches)
        assert (copy["job_id"], copy["items"]) == (f"def-1r{run}", a_batch().items)
        assert worker.held_copies() == ({} if run == 1 else {b"def-1/0/9": encode(a_batch("def-1", hold=True))})
    assert worker.statuses()[-1].status == SUCCEEDED
    assert sent_to(worker, NAMES.held) == [("send", NAMES.held, None, b"def-1/0/9", 2)]  # after the last run's batch
    assert worker.published().index(sent_to(worker, NAMES.held)[0]) > worker.published().index(
        sent_to(worker, NAMES.batches)[0])


async def test_a_cancelled_definition_drops_its_held_copies() -> None:
    worker = Worker()
    await worker.track(submitted("def-1", schedule={"immediately": True}))
    await park(worker, a_batch("def-1", hold=True))
    await worker.track(command("cancel", "def-1"))
    assert worker.held_copies() == {}


async def test_a_fired_definition_makes_a_run_with_copies_of_its_batches_once() -> None:
    worker = Worker()
    await worker.track(submitted("def-1", schedule={"immediately": True}))
    worker.parked[(2, 7)] = encode(a_batch("def-1", hold=True))
    await worker.track(BatchParked(job_id="def-1", seq=0, partition=2, offset=7))
    assert worker.job_states.get("def-1").status == SCHEDULED
    worker.effects.clear()
    fire = command("fire", "def-1", due=AT)
    await worker.track(fire)
    (_, events, run, key, _), (_, batches, copy, _, partition), (_, _, status, _, _) = worker.published()
    assert (events, key, run["kind"], run["job_id"]) == (NAMES.job_events, b"def-1r0", "submitted", "def-1r0")
    assert run["parent_id"] == "def-1" and run["details"] == {"scheduled_for": AT} and run["batches"] == 1
    assert (batches, partition, copy["job_id"], copy["hold"]) == (NAMES.batches, 2, "def-1r0", False)
    assert status["runs_fired"] == 1 and status["last_due"] == AT and status["parked"] == [[2, 7]]
    worker.effects.clear()
    await worker.track(fire)  # redelivered: that due time has fired already
    assert worker.published() == []


async def test_an_unreadable_job_event_goes_to_the_dead_letters_and_fails_the_job_it_names() -> None:
    worker = Worker()
    await worker.track(submitted())
    worker.effects.clear()
    message = Message(NAMES.job_events, 0, 5, b"job-1", orjson.dumps({"kind": "nonsense", "job_id": "job-1"}))
    await worker.tracker.handle(message)
    (_, letter, reason), (_, topic, status, _, _) = worker.published()
    assert letter == message and "unknown job event kind" in reason
    assert topic == NAMES.status and status["status"] == FAILED
    assert status["error"]["message"].startswith("a message of the job was refused: unknown job event kind")


async def test_a_message_naming_no_job_is_set_aside_and_nothing_else_happens() -> None:
    worker = Worker()
    message = Message(NAMES.job_events, 0, 5, None, b"not json")
    await worker.tracker.handle(message)
    [(kind, letter, _)] = worker.published()
    assert (kind, letter) == ("dead_letter", message)


async def test_an_error_handling_an_event_fails_its_job_and_the_stream_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker()
    await worker.track(submitted())

    async def broken(partition: int, offset: int) -> bytes:
        raise RuntimeError("no broker")

    worker.fetch = broken  # type: ignore[method-assign]
    worker.effects.clear()
    await worker.track(BatchParked(job_id="job-1", seq=0, partition=2, offset=7))  # sent on: the fetch fails
    [(_, _, status, _, _)] = worker.published()
    assert status["status"] == FAILED
    assert status["error"]["message"] == "an event of the job could not be handled: RuntimeError('no broker')"
    [logged] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert vars(logged)["job_id"] == "job-1"  # in a JSON log line
    await worker.track(submitted("job-2"))
    assert worker.statuses()[-1].id == "job-2"


async def test_a_part_of_a_requested_job_is_routed_into_batches() -> None:
    worker = Worker()
    request = {"kind": "request", "job_id": "job-1", "tenant": TENANT, "type": RESOURCES, "action": "post",
               "parts": 1}
    part = {"kind": "part", "job_id": "job-1", "part": 0, "records": [{"type": "server"}, {"type": "server"}]}
    for event in (request, part):
        await worker.tracker.handle(Message(NAMES.job_events, 0, 0, b"job-1", orjson.dumps(event)))
    batches = [effect for effect in worker.published() if effect[1] == NAMES.batches]
    assert sum(len(batch[2]["items"]) for batch in batches) == 2
    assert worker.statuses()[-1].total == 2 and worker.statuses()[-1].batches == len(batches)


def a_request(job_id: str, tenant: str = TENANT) -> bytes:
    return orjson.dumps({"kind": "request", "job_id": job_id, "tenant": tenant, "type": RESOURCES, "action": "post",
                         "parts": 1})


async def test_a_requested_job_over_its_tenants_cap_fails_with_the_reason_and_one_that_ends_frees_a_place() -> None:
    worker = Worker(Settings(partitions=PARTITIONS, max_active_jobs=2))
    for job_id, tenant in (("job-1", TENANT), ("job-2", TENANT), ("other", "another tenant")):
        await worker.tracker.handle(Message(NAMES.job_events, 0, 0, job_id.encode(), a_request(job_id, tenant)))
    assert [job.status for job in worker.statuses()] == [QUEUED, QUEUED, QUEUED]  # each tenant has its own cap

    await worker.tracker.handle(Message(NAMES.job_events, 0, 0, b"job-3", a_request("job-3")))
    refused = worker.statuses()[-1]
    assert (refused.id, refused.status, refused.error["code"]) == ("job-3", FAILED, "too_many_active_jobs")
    assert "2 jobs queued or processing" in refused.error["message"]
    part = {"kind": "part", "job_id": "job-3", "part": 0, "records": [{"type": "server"}]}
    await worker.tracker.handle(Message(NAMES.job_events, 0, 0, b"job-3", orjson.dumps(part)))
    assert not [effect for effect in worker.published() if effect[1] == NAMES.batches]  # its parts are not routed

    await worker.track(command("cancel", "job-1"))
    await worker.tracker.handle(Message(NAMES.job_events, 0, 0, b"job-4", a_request("job-4")))
    assert (worker.statuses()[-1].id, worker.statuses()[-1].status) == ("job-4", QUEUED)
    assert worker.job_states.active(TENANT) == 2


async def test_job_states_let_an_owned_partition_go_once_synced_and_read_it_from_its_end_once_revoked() -> None:
    effects: list[Effect] = []
    states = JobStates(lambda on_message: FakeTail(effects, "status", on_message))
    await states.sync(1)
    await states.sync(1)  # once per assignment
    assert effects == [("caught_up", "status", [1]), ("unwant", "status", [1])]
    states.put(Job(id="a", tenant=TENANT, status="processing"), 1)
    states.tail.deliver(1, 0, orjson.dumps(Job(id="a", tenant=TENANT).to_dict()))  # our own, fetched late
    assert states.get("a").status == "processing"
    await states.read_all(3)  # the synced partition holds everything already
    assert effects[-1] == ("caught_up", "status", [0, 2])
    states.revoke({1})
    await states.read_again({1})
    assert effects[-1] == ("want_from_end", "status", [1])
    states.tail.deliver(1, 1, orjson.dumps(Job(id="a", tenant=TENANT, status="succeeded").to_dict()))  # its new owner's
    assert states.get("a").status == "succeeded"


async def test_job_states_read_a_revoked_partition_from_its_beginning_if_its_end_is_unknown() -> None:
    effects: list[Effect] = []

    class NoEnd(FakeTail):
        async def want_from_end(self, partitions: Iterable[int]) -> None:
            raise ConnectionError("broker down")

    states = JobStates(lambda on_message: NoEnd(effects, "status", on_message))
    await states.sync(2)
    states.revoke({2})
    await states.read_again({2})
    assert effects[-1] == ("want", "status", {2: 0})


def test_job_states_count_each_tenants_active_jobs_from_any_partition() -> None:
    states = JobStates(lambda on_message: FakeTail([], "status", on_message))
    states.put(Job(id="a", tenant=TENANT), 0)
    states.tail.deliver(1, 0, orjson.dumps(Job(id="b", tenant=TENANT, status="processing").to_dict()))
    states.put(Job(id="c", tenant=TENANT, status=SUSPENDED), 2)
    assert states.active(TENANT) == 2
    states.put(Job(id="a", tenant=TENANT, status="succeeded"), 0)
    states.put(Job(id="c", tenant=TENANT, status=QUEUED), 2)
    assert (states.active(TENANT), states.active("nobody")) == (2, 0)


def test_job_states_tell_whether_any_job_is_running() -> None:
    states = JobStates(lambda on_message: FakeTail([], "status", on_message))
    states.put(Job(id="def", tenant=TENANT, status=SCHEDULED), 0)  # a definition waits, it does not run
    states.put(Job(id="s", tenant=TENANT, status=SUSPENDED), 1)
    assert not states.running()
    states.tail.deliver(2, 0, orjson.dumps(Job(id="a", tenant="other", status="processing").to_dict()))
    assert states.running()
    states.put(Job(id="a", tenant="other", status="succeeded"), 2)
    assert not states.running()


# --- the scheduler and the upload watch ----------------------------------------------------------


async def owns_everything() -> set[int]:
    return set(range(PARTITIONS))


async def test_the_scheduler_fires_a_due_definition_once_per_due_time() -> None:
    worker = Worker()
    definition = Job(id="def-1", tenant=TENANT, status=SCHEDULED, batches=1, parked=[[2, 7]], created_at=AT,
                     schedule={"immediately": True})
    worker.job_states.put(definition, 1)
    scheduler = Scheduler(publish=worker.publish, topics=NAMES, job_states=worker.job_states, owned=owns_everything,
                          moment=lambda: datetime(2026, 1, 1, tzinfo=UTC), now=lambda: AT)
    await scheduler.look()
    await scheduler.look()
    assert worker.events() == [{"kind": "fire", "job_id": "def-1", "tenant": TENANT, "at": AT, "due": AT,
                                "reason": None, "changes": None}]


async def test_the_scheduler_waits_for_every_batch_and_leaves_other_workers_definitions() -> None:
    worker = Worker()
    schedule = {"immediately": True}
    worker.job_states.put(Job(id="def-1", tenant=TENANT, status=SCHEDULED, batches=2, parked=[[2, 7]],
                              created_at=AT, schedule=schedule), 1)
    worker.job_states.put(Job(id="def-2", tenant=TENANT, status=SCHEDULED, batches=0, created_at=AT,
                              schedule=schedule), 3)

    async def owns_one() -> set[int]:
        return {1}

    await Scheduler(publish=worker.publish, topics=NAMES, job_states=worker.job_states, owned=owns_one).look()
    assert worker.events() == []


async def test_a_definition_whose_schedule_cannot_run_is_failed_once() -> None:
    worker = Worker()
    worker.job_states.put(Job(id="def-1", tenant=TENANT, status=SCHEDULED, batches=0, created_at=AT,
                              schedule={"cron": "not a cron"}), 1)
    scheduler = Scheduler(publish=worker.publish, topics=NAMES, job_states=worker.job_states, owned=owns_everything)
    await scheduler.look()
    await scheduler.look()
    [fail] = worker.events()
    assert fail["kind"] == "fail" and fail["reason"].startswith("the job's schedule cannot run")


async def test_a_silent_upload_gets_one_timeout_and_the_tracker_fails_it() -> None:
    worker = Worker(Settings(partitions=PARTITIONS, upload_timeout=30))
    watch = UploadWatch(publish=worker.publish, topics=NAMES, job_states=worker.job_states, clock=worker.uploads,
                        owned=owns_everything, now=lambda: AT)
    await worker.track(submitted(uploading=True))
    worker.seconds = 20
    await watch.look()
    assert worker.events() == []  # silent, but not for long enough yet
    worker.seconds = 31
    await watch.look()
    await watch.look()
    [timeout] = worker.events()
    assert timeout["kind"] == "upload_timeout"
    await worker.track(command("upload_timeout"))
    assert worker.statuses()[-1].status == FAILED
    assert (worker.statuses()[-1].error or {})["code"] == UPLOAD_INTERRUPTED
    assert worker.uploads.beats == {}  # no longer watched


async def test_a_beat_handled_before_the_timeout_command_keeps_the_upload_alive() -> None:
    worker = Worker(Settings(partitions=PARTITIONS, upload_timeout=30))
    await worker.track(submitted(uploading=True))
    worker.seconds = 31
    await worker.track(command("beat"))  # read before the timeout command, in partition order
    await worker.track(command("upload_timeout"))
    assert [job.status for job in worker.statuses()] == [QUEUED]


async def test_a_lost_partition_restarts_the_clocks_of_its_uploads() -> None:
    clock = UploadClock(30, clock=lambda: 5.0)
    clock.heard("job-1")
    clock.heard("job-2")
    clock.restart({1}, {"job-1": 1, "job-2": 2})
    assert clock.beats == {"job-2": 5.0}


# --- the expiry ----------------------------------------------------------------------------------

DONE_AT, RETENTION = "2026-01-01T00:00:00.000Z", 60
NOT_YET, DUE = datetime(2026, 1, 1, 0, 0, 59, 999000, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def finished(job_id: str, status: str = SUCCEEDED, completed_at: str = DONE_AT, **fields: Any) -> Job:
    return Job(id=job_id, tenant=TENANT, status=status, created_at=AT, completed_at=completed_at,
               **{"batches": 1, "done": 1, **fields})


def expiry(worker: Worker, moment: datetime, retention: int = RETENTION) -> Expiry:
    return Expiry(publish=worker.publish, topics=NAMES, job_states=worker.job_states, owned=owns_everything,
                  retention=retention, moment=lambda: moment, now=lambda: AT)


def deletes(worker: Worker) -> list[str]:
    return [event["job_id"] for event in worker.events() if event["kind"] == "delete"]


async def test_the_expiry_deletes_each_finished_job_once_it_is_due_and_only_once() -> None:
    worker = Worker()
    worker.job_states.put(finished("ok"), 0)
    worker.job_states.put(finished("cancelled", CANCELLED), 1)
    worker.job_states.put(finished("later", completed_at="2026-01-01T00:00:00.001Z"), 0)
    await expiry(worker, NOT_YET).look()
    assert deletes(worker) == []  # a millisecond before the first is due
    await expiry(worker, DUE).look()
    await expiry(worker, DUE).look()
    assert sorted(deletes(worker)) == ["cancelled", "ok"]  # "later" is due a millisecond after


@pytest.mark.parametrize("backlog, first_look", [
    pytest.param(MAX_DELETES_PER_LOOK - 1, MAX_DELETES_PER_LOOK - 1, id="under-the-most"),
    pytest.param(MAX_DELETES_PER_LOOK, MAX_DELETES_PER_LOOK, id="the-most"),
    pytest.param(MAX_DELETES_PER_LOOK + 1, MAX_DELETES_PER_LOOK, id="over-the-most"),
])
async def test_a_backlog_of_expired_jobs_is_deleted_over_several_looks(backlog: int, first_look: int) -> None:
    worker = Worker()
    for i in range(backlog):  # one second apart, spread over the partitions
        worker.job_states.put(finished(f"j{i:04}", completed_at=f"2025-01-01T00:{i // 60:02}:{i % 60:02}.000Z"),
                              i % PARTITIONS)
    await expiry(worker, DUE).look()
    assert len(deletes(worker)) == first_look
    await expiry(worker, DUE).look()
    assert sorted(deletes(worker)) == [f"j{i:04}" for i in range(backlog)]


@pytest.mark.parametrize("job", [
    pytest.param(Job(id="running", tenant=TENANT, status=PROCESSING, created_at=AT), id="processing"),
    pytest.param(Job(id="held", tenant=TENANT, status=SUSPENDED, created_at=AT), id="suspended"),
    pytest.param(Job(id="def", tenant=TENANT, status=SCHEDULED, created_at=AT, schedule={"cron": "* * * * *"},
                     runs_fired=3), id="definition-with-runs-to-fire"),
])
async def test_the_expiry_never_touches_a_job_that_runs(job: Job) -> None:
    worker = Worker()
    worker.job_states.put(job, 0)
    await expiry(worker, datetime(2100, 1, 1, tzinfo=UTC)).look()
    assert deletes(worker) == []


async def test_the_expiry_keeps_jobs_forever_with_retention_0_and_leaves_other_workers_partitions() -> None:
    worker = Worker()
    worker.job_states.put(finished("mine"), 1)
    worker.job_states.put(finished("theirs"), 2)
    await expiry(worker, datetime(2100, 1, 1, tzinfo=UTC), retention=0).look()
    assert deletes(worker) == []

    async def owns_one() -> set[int]:
        return {1}

    await Expiry(publish=worker.publish, topics=NAMES, job_states=worker.job_states, owned=owns_one,
                 retention=RETENTION, moment=lambda: DUE, now=lambda: AT).look()
    assert deletes(worker) == ["mine"]


async def test_a_finished_definition_expires_like_a_job_and_its_runs_each_on_their_own() -> None:
    worker = Worker()
    worker.job_states.put(finished("def", schedule={"runs": 1}, batches=1, done=0, parked=[[2, 7]]), 0)
    worker.job_states.put(finished("defr0", completed_at="2026-01-01T00:05:00.000Z", parent_id="def"), 0)
    await expiry(worker, DUE).look()
    assert deletes(worker) == ["def"]


async def test_a_deleted_job_is_forgotten_and_a_tombstone_follows_its_status() -> None:
    worker = Worker()
    await worker.track(submitted())
    worker.job_states.put(finished("job-1"), 0)
    await worker.track(command("delete"))
    *_, (_, topic, status, key, partition), tombstone = worker.published()
    assert (topic, status["status"], key, partition) == (NAMES.status, DELETED, b"job-1", 0)
    assert tombstone == ("send", NAMES.status, None, b"job-1", 0)
    assert "job-1" not in worker.job_states.jobs and "job-1" not in worker.job_states.partitions
    assert "job-1" not in worker.job_states.stopped  # all its batches were counted: none can come
    await worker.track(command("delete"))  # a second delete (a user's, racing the expiry) changes nothing
    assert worker.published()[-1] == tombstone


async def test_a_job_stopped_before_all_its_batches_came_stays_stopped_once_forgotten() -> None:
    worker = Worker()
    await worker.track(submitted(batches=3))
    await worker.track(command("cancel"))
    await worker.track(command("delete"))
    assert "job-1" not in worker.job_states.jobs and "job-1" in worker.job_states.stopped
    await worker.applier.handle(batch_message(a_batch(seq=2)))
    assert [effect for effect in worker.published() if effect[1] == NAMES.changes] == []


def test_job_states_read_a_tombstone_and_a_deleted_status_from_the_tail_without_error() -> None:
    states = JobStates(lambda on_message: FakeTail([], "status", on_message))
    states.tail.deliver(1, 0, orjson.dumps(finished("gone").to_dict()))
    states.tail.deliver(1, 1, orjson.dumps(replace(finished("gone"), status=DELETED).to_dict()))
    states.tail.deliver(1, 2, None)
    assert states.jobs == {} and states.expired(1, RETENTION, DUE, 10) == []


# --- the job rules as messages call them ---------------------------------------------------------


def test_next_job_calls_the_rule_of_each_command() -> None:
    job = jobs.submitted(Job(id="job-1"), tenant=TENANT, type=RESOURCES, action="post", description=None,
                         total=1, batches=1, created_at=AT)

    def after(event: JobCommand) -> Job:
        changed = next_job(job, event, AT)
        assert changed is not None
        return changed

    assert after(command("suspend")).status == SUSPENDED
    assert after(command("cancel")).status == CANCELLED
    assert after(command("fail", reason="boom")).error == {"code": jobs.JOB_FAILED, "message": "boom"}
    assert after(command("update", changes={"description": "d"})).description == "d"
    with pytest.raises(TypeError, match="'fire' command"):
        next_job(job, command("fire"), AT)
    with pytest.raises(TypeError, match="BatchParked"):
        next_job(job, BatchParked(job_id="job-1", seq=0, partition=0, offset=0), AT)


def test_a_released_batch_is_a_batch_of_the_given_job_and_no_longer_held() -> None:
    batch = a_batch(hold=True)
    assert RecordBatch(**orjson.loads(released(encode(batch), "job-1r3"))) == replace(batch, job_id="job-1r3",
                                                                                      hold=False)
