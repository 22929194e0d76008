"""The worker's in-memory state, rebuilt from topics rather than kept in Faust tables.

``ObjectState`` is the object index of the partitions a worker needs (the ones it owns, and
all of them while a relationships job needs every object), fed by the changes topic (its
own writes are applied directly and skipped when the tail reads them back), together with the
batches already applied, so that a redelivered batch is recognised and not applied again.
``JobStates`` is every job's state, fed by the status topic (its changelog), with the
definitions whose schedules the worker's scheduler watches and the jobs still being uploaded,
which its upload watch watches. ``JobCommands`` is what the cancels and suspends in the
job-events topic say, read as they are written, before the tracker applies them.

Each is handed how to make its ``Tail`` (a ``TopicTail`` in the worker): the barriers are the
only part that needs a broker, so the orchestration can be tested with a tail that is always
caught up.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import DELETED, GO_ON, HOLD, SCHEDULED, STOP, Job, expired, notice
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.kafka.tail import OnMessage
from bulkjobs.kafka.topics import COMMAND_NOTICE, COMMANDS, AppliedBatch, decode, job_from_status


class Tail(Protocol):
    """What the state needs of a ``kafka.tail.TopicTail``: its barriers, and letting partitions go."""

    @property
    def started(self) -> bool: ...

    async def ensure_started(self, partitions: int, *, lazy: bool = False, from_end: bool = False) -> None: ...

    async def caught_up(self, partitions: Iterable[int]) -> None: ...

    async def fresh(self, age: float) -> None: ...

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
        """Wait, once per assignment, until the state holds everything of ``partition``."""
        if partition not in self.synced:
            await self.tail.caught_up([partition])
            self.synced.add(partition)

    def revoke(self, partitions: set[int]) -> None:
        self.synced -= partitions


class ObjectState(RebuiltState):
    def __init__(self, tail_of: TailOf) -> None:
        super().__init__(tail_of)
        self.index = ObjectIndex()
        self.applied: dict[tuple[str, int], Counts] = {}
        self.offsets: dict[int, int] = {}  # partition -> last offset already in the index
        self.revoked: set[int] = set()  # revoked by a rebalance that has not assigned yet

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        if offset <= self.offsets.get(partition, -1) or value is None:
            return  # our own write, already applied (the changes topic has no tombstones)
        self.record(partition, offset, AppliedBatch(**decode(value)), apply_ops=True)

    def record(self, partition: int, offset: int, applied: AppliedBatch, apply_ops: bool) -> None:
        if apply_ops:
            for op in applied.ops:
                self.index.apply_op(op)
        self.applied[(applied.job_id, applied.seq)] = applied.count_delta
        self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    async def sync_all(self, partitions: int) -> None:
        """Wait until the index holds every change of every partition (for cross-partition reads)."""
        await self.tail.caught_up(range(partitions))

    def revoke(self, partitions: set[int]) -> None:
        super().revoke(partitions)
        self.revoked |= partitions

    def assign(self, partitions: set[int]) -> None:
        """After a rebalance: stop reading the partitions another worker writes now. If one comes
        back later it is read again from its beginning, which brings its ids up to date."""
        gone, self.revoked = self.revoked - partitions, set()
        if gone and self.tail.started:
            self.tail.unwant(gone)
        for partition in gone:
            self.offsets.pop(partition, None)


class JobStates(RebuiltState):
    """Every job's latest state, fed by the status topic, which doubles as the jobs' changelog.

    A worker is the only writer of the status partitions it owns: once a partition is synced
    it keeps that partition's jobs itself and the tail skips them, so a snapshot read back
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
        self._active: Counter[str] = Counter()  # tenant -> its jobs queued or processing
        self._finished: dict[int, list[tuple[str, str]]] = {}  # partition -> heap of (completed_at, job id)
        self._all_read = False

    def _on_message(self, partition: int, offset: int, value: bytes | None) -> None:
        if partition in self.synced:
            return  # our own write, already applied
        if value is None:  # a tombstone: the job was deleted
            return
        self.put(job_from_status(decode(value)), partition)

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

    def _forget(self, job: Job) -> None:
        """A deleted job leaves memory; its id stays stopped while a batch of it may still come."""
        self.jobs.pop(job.id, None)
        self.partitions.pop(job.id, None)
        self._definitions.discard(job.id)
        self._uploads.discard(job.id)
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
            await self.tail.caught_up(range(partitions))
            self._all_read = True

    def definitions(self) -> list[Job]:
        """The definitions whose schedule is running (status scheduled)."""
        return [self.jobs[job_id] for job_id in self._definitions]

    def uploads(self) -> list[Job]:
        """The jobs whose submitter has not sealed them yet (and that have not ended)."""
        return [self.jobs[job_id] for job_id in self._uploads]

    def active(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or processing, as far as this worker knows
        (the statuses of other workers' partitions arrive through the tail)."""
        return self._active[tenant]

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
