"""The worker's in-memory state, rebuilt from topics rather than kept in Faust tables.

``ObjectState`` is the object index of the partitions a worker needs (the ones it owns, and
all of them while a relationships job needs every object), fed by the changes topic up to the
catch-up barrier of a partition and by the worker's own writes after it (the tail then stops
reading the partition), together with the batches already applied, so that a redelivered
batch is recognised and not applied again, and the overlays of the dry runs being applied (``domain.dry_run``).
``JobStates`` is every job's state, fed by the status topic (its changelog), with the
definitions whose schedules the worker's scheduler watches, the jobs still being uploaded
(its upload watch), and the ended jobs whose webhook is still to deliver (its webhook sender).
``JobCommands`` is what the cancels and suspends in the job-events topic say, read as they are
written, before the tracker applies them.

Each is handed how to make its ``Tail`` (a ``TopicTail`` in the worker): the barriers are the
only part that needs a broker, so the orchestration can be tested with a tail that is always
caught up.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.dry_run import Overlays
from bulkjobs.domain.identity import partition_of
from bulkjobs.domain.jobs import DELETED, GO_ON, HOLD, SCHEDULED, STOP, Job, expired, notice
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.domain.webhooks import delivering
from bulkjobs.gcpause import gc_paused
from bulkjobs.kafka.tail import OnMessage
from bulkjobs.kafka.topics import COMMAND_NOTICE, COMMANDS, AppliedBatch, SnapshotManifest, decode, job_from_status
from bulkjobs.streams import metrics

if TYPE_CHECKING:
    from bulkjobs.streams.snapshots import Snapshot

log = logging.getLogger(__name__)

PRELOADED = "the object index is loaded and caught up for the assigned partitions"  # logged, with them


class Tail(Protocol):
    """What the state needs of a ``kafka.tail.TopicTail``: its barriers, and letting partitions go."""

    @property
    def started(self) -> bool: ...

    async def ensure_started(self, partitions: int, *, lazy: bool = False, from_end: bool = False) -> None: ...

    async def caught_up(self, partitions: Iterable[int], held: Callable[[int], bool] = ...) -> None: ...

    async def fresh(self, age: float) -> None: ...

    def want(self, starts: Mapping[int, int]) -> None: ...

    async def want_from_end(self, partitions: Iterable[int]) -> None: ...

    def unwant(self, partitions: Iterable[int]) -> None: ...


TailOf = Callable[[OnMessage], Tail]  # the tail of a topic, handing each message to the callback


class RebuiltState:
    """State rebuilt from a topic by a ``TopicTail``, with a catch-up barrier per partition."""

    def __init__(self, tail_of: TailOf) -> None:
        self.synced: set[int] = set()  # partitions caught up since they were assigned
        self.tail = tail_of(self._on_message)

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        raise NotImplementedError

    async def sync(self, partition: int) -> None:
        """Wait, once per assignment, until the state holds everything of ``partition``; then
        stop reading it: the worker that owns a partition is its only writer and keeps the state
        as it writes, so reading its own writes back would only cost a fetch of the partition
        every few tens of milliseconds."""
        if partition not in self.synced:
            await self.tail.caught_up([partition])
            self.synced.add(partition)
            self.tail.unwant([partition])

    async def catch_up(self, partitions: Iterable[int]) -> None:
        """Wait until the state holds everything of ``partitions`` written before the call (the
        synced ones hold it already, and are no longer read, even those synced while it waits)."""
        await self.tail.caught_up([partition for partition in partitions if partition not in self.synced],
                                  held=lambda partition: partition in self.synced)

    def revoke(self, partitions: set[int]) -> None:
        self.synced -= partitions


class SnapshotSource(Protocol):
    """Where a partition's latest complete snapshot is found (``streams.snapshots``)."""

    async def latest(self, partition: int) -> Snapshot | None: ...


class ObjectState(RebuiltState):
    """The object index, one ``ObjectIndex`` per partition read, and the applied map.

    A partition is loaded when it is assigned (``preload``), or else the first time it is
    needed: from its latest snapshot if it has one, then the changes after the snapshot's
    offset (docs/architecture.md, snapshots)."""

    def __init__(self, tail_of: TailOf, partitions: int, snapshots: SnapshotSource) -> None:
        super().__init__(tail_of)
        self.partitions, self.snapshots = partitions, snapshots
        self.parts: dict[int, ObjectIndex] = {}
        self.dry_runs = Overlays(self.index_of)  # the dry runs' overlays of the partitions' indexes
        self.applied: dict[int, dict[tuple[str, int], Counts]] = {}  # partition -> (job, seq) -> counts
        self.offsets: dict[int, int] = {}  # partition -> last offset already in the index
        self.manifests: dict[int, SnapshotManifest] = {}  # partition -> its latest snapshot known
        self.revoked: set[int] = set()  # revoked by a rebalance that has not assigned yet
        self._loaded: set[int] = set()
        self._let_go: set[int] = set()  # loaded partitions the tail stopped reading once synced
        self._first: dict[int, int] = {}  # partition -> the offset its first change read must have
        self._loading = asyncio.Lock()
        self._preloading: asyncio.Task[None] | None = None
        self._in_flight = 0  # batches applied to the index whose AppliedBatch is not acked yet
        self._idle = asyncio.Event()
        self._idle.set()

    def index_of(self, partition: int) -> ObjectIndex:
        part = self.parts.get(partition)
        if part is None:
            part = self.parts[partition] = ObjectIndex(elsewhere=self.tenant_anywhere)
        return part

    def tenant_anywhere(self, object_id: str) -> str | None:
        part = self.parts.get(partition_of(object_id, self.partitions))
        return None if part is None else part.objects.get(object_id)

    def live_ids(self) -> tuple[int, int]:
        """(objects, relationships) in the index of every partition read."""
        return (sum(len(part.objects) for part in self.parts.values()),
                sum(len(part.relationships) for part in self.parts.values()))

    def applied_counts(self, partition: int, job_id: str, seq: int) -> Counts | None:
        return self.applied.get(partition, {}).get((job_id, seq))

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        metrics.CHANGES_READ.labels("messages").inc()
        if value is None:
            return  # the changes topic has no tombstones
        metrics.CHANGES_READ.labels("bytes").inc(len(value))
        if offset <= self.offsets.get(partition, -1):
            return  # our own write, already applied
        expected = self._first.pop(partition, None)
        if expected is not None and offset > expected:
            log.error("changes %d..%d of partition %d are gone (retention): its index misses them",
                      expected, offset - 1, partition)
        with gc_paused():  # a batch of changes decodes into thousands of fresh objects at once
            self.record(partition, offset, AppliedBatch(**decode(value)), apply_ops=True)

    def record(self, partition: int, offset: int, applied: AppliedBatch, apply_ops: bool) -> None:
        if apply_ops and applied.dry_run:
            self.dry_runs.replay(applied.job_id, partition, applied.would_be)
        elif apply_ops:
            index = self.index_of(partition)
            for op in applied.ops:
                index.apply_op(op)
        self.applied.setdefault(partition, {})[(applied.job_id, applied.seq)] = applied.count_delta
        self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    async def sync(self, partition: int) -> None:
        """Load ``partition`` if it is not yet, then sync it (``RebuiltState.sync``)."""
        if partition in self.synced:
            return
        await self.load([partition])
        self._read_again([partition])
        await super().sync(partition)
        self._let_go.add(partition)

    async def sync_all(self, partitions: int) -> None:
        """Wait until the index holds every change of every partition (for cross-partition reads);
        the synced ones hold everything already."""
        await self.load(range(partitions))
        self._read_again(range(partitions))
        await self.catch_up(range(partitions))

    def _read_again(self, partitions: Iterable[int]) -> None:
        """Read again the partitions let go once synced and revoked since (given back, or needed
        by a relationships job): what others wrote after this worker's last change."""
        back = self._let_go.difference(self.synced).intersection(partitions)
        if back:
            self._let_go -= back
            self.tail.want({partition: self.offsets.get(partition, -1) + 1 for partition in back})

    async def load(self, partitions: Iterable[int]) -> None:
        """Start reading the partitions not read yet: from their latest snapshot, then the
        changes after it (all of them if there is none)."""
        async with self._loading:
            for partition in partitions:
                if partition in self._loaded:
                    continue
                try:
                    snapshot = await self.snapshots.latest(partition)
                except Exception:  # a snapshot that cannot be read: the history, if it is still there
                    log.exception("the snapshot of partition %d could not be read: reading its changes "
                                  "from the beginning", partition)
                    snapshot = None
                if snapshot is None:
                    self.parts.pop(partition, None)
                    start = 0
                else:
                    self.parts[partition] = replace(snapshot.index, elsewhere=self.tenant_anywhere)
                    self.applied[partition] = snapshot.applied
                    self.offsets[partition] = snapshot.manifest.changes_offset
                    self.manifests[partition] = snapshot.manifest
                    start = snapshot.manifest.changes_offset + 1
                self.tail.want({partition: start})
                self._first[partition] = start
                self._loaded.add(partition)

    def preload(self, partitions: set[int], ready: Callable[[], Awaitable[None]]) -> asyncio.Task[None] | None:
        """Start syncing newly assigned partitions now, in the background, not at their first
        batch: a worker that joins the group loads the index it takes over while it waits for
        work, not while the job's first batches wait for it, and its tail stops reading them
        (an idle read of a partition is a fetch every few tens of milliseconds, which costs the
        broker more than the worker). ``ready`` starts the tail; a rebalance (``revoke``) stops
        a preload under way, and a batch syncs what it left."""
        if not partitions:
            return None
        self._preloading = asyncio.create_task(self._preload(sorted(partitions), ready), name="preload object index")
        return self._preloading

    async def _preload(self, partitions: list[int], ready: Callable[[], Awaitable[None]]) -> None:
        started = time.perf_counter()
        try:
            await ready()
            await self.load(partitions)  # every snapshot first, then the barriers
            for partition in partitions:
                await self.sync(partition)
        except Exception:  # the first batch of each partition loads it again
            log.exception("preloading partitions %s failed; their first batches load them", partitions)
        else:
            log.info("%s %s in %.1f s", PRELOADED, partitions, time.perf_counter() - started)

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Around applying a batch to the index until its AppliedBatch is acked: a snapshot is
        never taken in between (it would hold effects not in the changes topic yet)."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def settled(self) -> None:
        """Return at a moment when the index holds exactly the changes up to ``offsets``."""
        while self._in_flight:
            await self._idle.wait()

    def prune_applied(self, partition: int, finished: Callable[[str], bool]) -> None:
        """Forget the applied-map entries of the jobs that need no more batches."""
        entries = self.applied.get(partition, {})
        done = {job_id for job_id, _ in entries if finished(job_id)}
        if done:
            self.applied[partition] = {key: counts for key, counts in entries.items() if key[0] not in done}

    def revoke(self, partitions: set[int]) -> None:
        super().revoke(partitions)
        self.revoked |= partitions
        if self._preloading is not None:  # it would load a partition that may be gone after the rebalance
            self._preloading.cancel()
            self._preloading = None

    def assign(self, partitions: set[int]) -> None:
        """After a rebalance: stop reading the partitions another worker writes now, and forget
        them. If one comes back later it is loaded again, from its latest snapshot."""
        gone, self.revoked = self.revoked - partitions, set()
        if gone and self.tail.started:
            self.tail.unwant(gone)
        for partition in gone:
            for held in (self.parts, self.applied, self.offsets, self.manifests):
                held.pop(partition, None)
        self._loaded -= gone
        self._let_go -= gone
        self.dry_runs.drop_partitions(gone)


class JobStates(RebuiltState):
    """Every job's latest state, fed by the status topic, which doubles as the jobs' changelog.

    A worker is the only writer of the status partitions it owns: once a partition is synced
    it keeps that partition's jobs itself and stops reading it (``read_again`` reads it again
    once a rebalance takes it away); what was fetched before is skipped, so a snapshot read back
    late can never roll a job back. Jobs that are cancelled, failed or deleted are remembered
    so that their batches are no longer applied, whichever partition they live on.

    A deleted job (its ``deleted`` status, or the tombstone after it) is forgotten; only its id
    stays in ``stopped`` if some of its batches may still be waiting in the batches topic (it
    was cancelled or failed before all of them were counted). The finished jobs wait for their
    expiry in a heap per partition, ordered by when they completed (retention is the same for
    all), so the expiry looks at only the jobs that are due.
    """

    def __init__(self, tail_of: TailOf) -> None:
        super().__init__(tail_of)
        self.jobs: dict[str, Job] = {}
        self.partitions: dict[str, int] = {}  # job id -> its partition of the job events and statuses
        self.stopped: set[str] = set()
        self._definitions: set[str] = set()
        self._uploads: set[str] = set()
        self._callbacks: set[str] = set()  # ended jobs whose completion webhook is still to deliver
        self._active: Counter[str] = Counter()  # tenant -> its jobs queued or processing
        self._finished: dict[int, list[tuple[str, str]]] = {}  # partition -> heap of (completed_at, job id)
        self._all_read = False

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        if partition in self.synced:
            return  # our own write, already applied (fetched just before the tail let it go)
        if value is None:  # a tombstone: the job was deleted
            return
        self.put(job_from_status(decode(value)), partition)

    async def read_again(self, partitions: set[int]) -> None:
        """After a rebalance took ``partitions`` away: read them again from their end, where
        their next owner writes (this worker's own statuses are known). If the end cannot be
        asked for, from their beginning, as a worker that starts reads them."""
        if not partitions or not self.tail.started:
            return
        try:
            await self.tail.want_from_end(partitions)
        except Exception:
            log.exception("the end of status partitions %s is unknown: reading them from the beginning", partitions)
            self.tail.want(dict.fromkeys(partitions, 0))

    def put(self, job: Job, partition: int) -> None:
        before = self.jobs.get(job.id)
        if before is not None and before.active:
            self._active[before.tenant] -= 1
        if job.status == DELETED:
            self._forget(job)
            return
        if job.terminal and job.completed_at and (before is None or before.completed_at != job.completed_at):
            heapq.heappush(self._finished.setdefault(partition, []), (job.completed_at, job.id))
        if job.active:
            self._active[job.tenant] += 1
        self.jobs[job.id] = job
        self.partitions[job.id] = partition
        if job.stops_batches:
            self.stopped.add(job.id)
        if job.status == SCHEDULED:
            self._definitions.add(job.id)
        else:
            self._definitions.discard(job.id)
        if job.uploading and not job.terminal:
            self._uploads.add(job.id)
        else:
            self._uploads.discard(job.id)
        if delivering(job):
            self._callbacks.add(job.id)
        else:
            self._callbacks.discard(job.id)

    def _forget(self, job: Job) -> None:
        """A deleted job leaves memory; its id stays stopped while a batch of it may still come."""
        self.jobs.pop(job.id, None)
        self.partitions.pop(job.id, None)
        self._definitions.discard(job.id)
        self._uploads.discard(job.id)
        self._callbacks.discard(job.id)
        if job.all_batches_in:
            self.stopped.discard(job.id)
        else:
            self.stopped.add(job.id)

    def expired(self, partition: int, retention: int, now: datetime, most: int) -> list[Job]:
        """The finished jobs of ``partition`` past their expiry at ``now`` (``domain.jobs.expired``),
        the ``most`` that expired first, each named once: they leave the heap, as their delete
        command is about to be sent."""
        heap, due = self._finished.get(partition, []), list[Job]()
        while heap and len(due) < most:
            completed_at, job_id = heap[0]
            job = self.jobs.get(job_id)
            if job is not None and job.completed_at == completed_at and job.terminal:
                if not expired(job, retention, now):
                    break
                due.append(job)
            heapq.heappop(heap)  # due now, or stale: the job was deleted, or completed again
        return due

    async def read_all(self, partitions: int) -> None:
        """Wait, the first time, until every status written before the call is known: the
        appliers' barrier at start, so that a job stopped before the worker started is known
        before any batch is applied (later commands come through ``JobCommands``)."""
        if not self._all_read:
            await self.catch_up(range(partitions))
            self._all_read = True

    def definitions(self) -> list[Job]:
        """The definitions whose schedule is running (status scheduled)."""
        return [self.jobs[job_id] for job_id in self._definitions]

    def uploads(self) -> list[Job]:
        """The jobs whose submitter has not sealed them yet (and that have not ended)."""
        return [self.jobs[job_id] for job_id in self._uploads]

    def callbacks(self) -> list[Job]:
        """The ended jobs whose completion webhook is pending (``domain.webhooks.delivering``)."""
        return [self.jobs[job_id] for job_id in self._callbacks]

    def active(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or processing, as far as this worker knows
        (the statuses of other workers' partitions arrive through the tail)."""
        return self._active[tenant]

    def running(self) -> bool:
        """Whether any job is queued or processing, as far as this worker knows."""
        return any(count > 0 for count in self._active.values())

    def get(self, job_id: str) -> Job:
        return self.jobs.get(job_id) or Job(id=job_id)


class JobCommands:
    """The jobs whose batches a command already in the job-events topic stops or holds.

    The tracker applies a command only after the events of the job ahead of it in its
    partition, and the appliers learn the new status from the status topic after that: half a
    second in which hundreds of batches could still be applied. This tail reads the commands
    as they are written, from the moment the worker starts (older ones are in the statuses by
    then), so the appliers stop at once (``domain.jobs.notice``).
    """

    def __init__(self, tail_of: TailOf) -> None:
        self.stopped: set[str] = set()
        self.held: set[str] = set()
        self.tail = tail_of(self._on_message)

    async def fresh(self) -> None:
        """Return once every command written more than ``COMMAND_NOTICE`` ago is known."""
        await self.tail.fresh(COMMAND_NOTICE)

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        event = decode(value) if value is not None else None
        if not isinstance(event, dict) or event.get("kind") not in COMMANDS or not isinstance(event.get("job_id"), str):
            return
        changes = event.get("changes")
        meaning = notice(event["kind"], changes if isinstance(changes, dict) else None)
        if meaning == STOP:
            self.stopped.add(event["job_id"])
        elif meaning == HOLD:
            self.held.add(event["job_id"])
        elif meaning == GO_ON:
            self.held.discard(event["job_id"])
