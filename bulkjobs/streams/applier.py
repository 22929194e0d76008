"""The batch applier: applies each batch of the batches topic against the object index, once.

The order of its effects is what makes a batch's effects exactly-once on at-least-once delivery
(docs/architecture.md): wait for the partition's catch-up barrier; a batch already applied
(its ``(job, seq)`` is in the applied map) only sends its ``BatchDone`` again; a batch of a
stopped job is skipped, one of a job that ended otherwise is a late duplicate (also skipped),
one of a held job is parked (copied to the held topic, then ``BatchParked``); otherwise apply
it (a dry run's batch to the job's overlay of the index, ``domain.dry_run``), publish its
``AppliedBatch`` and wait for the ack, then publish its ``BatchDone``. An error handling a
message fails the batch's job, and the stream goes on. What became of each message
is counted (``streams.metrics``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bulkjobs.clock import utc_now
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.dry_run import would_be_ops
from bulkjobs.domain.identity import RELATIONSHIPS
from bulkjobs.domain.records import AppliedRecords, IdIndex, apply_batch, fail_all, internal_error
from bulkjobs.gcpause import gc_paused
from bulkjobs.kafka.topics import (
    AppliedBatch,
    BatchDone,
    BatchParked,
    RecordBatch,
    TopicNames,
    decode,
    encode,
    held_key,
    names_in,
)
from bulkjobs.logs import about_job
from bulkjobs.streams import metrics
from bulkjobs.streams.effects import DeadLetter, Message, Publish, publish_job_event, request_fail
from bulkjobs.streams.state import JobCommands, JobStates, ObjectState

log = logging.getLogger(__name__)


class BatchApplier:
    def __init__(self, *, publish: Publish, dead_letter: DeadLetter, topics: TopicNames, partitions: int,
                 objects: ObjectState, job_states: JobStates, commands: JobCommands, host: str,
                 now: Callable[[], str] = utc_now) -> None:
        self.publish, self.dead_letter, self.topics, self.partitions = publish, dead_letter, topics, partitions
        self.objects, self.job_states, self.commands = objects, job_states, commands
        self.host, self.now = host, now

    async def handle(self, message: Message) -> None:
        """Apply one message of the batches topic; any error fails the job it names, with the reason."""
        try:
            outcome = await self._handle(message)
        except Exception as exc:  # the stream goes on: the batch's job fails with the reason
            outcome = metrics.ERROR
            job_id, tenant = names_in(None, message.value)
            log.exception("the batch at %s could not be handled", message, extra=about_job(job_id, tenant))
            if job_id is not None:
                await self._fail(job_id, tenant or "", f"a batch of the job could not be applied: {exc!r}")
        metrics.batch_handled(outcome)

    async def _handle(self, message: Message) -> str:
        try:
            with gc_paused():  # a batch decodes into thousands of fresh objects at once
                batch = RecordBatch(**decode(message.value))
        except Exception as exc:
            await self.dead_letter(message, f"unreadable record batch: {exc!r}")
            job_id, _ = names_in(None, message.value)
            if job_id is not None:
                await self._fail(job_id, "", f"a batch of the job could not be read: {exc!r}")
            return metrics.UNREADABLE
        return await self.apply(message.partition, message.offset, batch, message.value)

    async def apply(self, partition: int, offset: int, batch: RecordBatch, value: bytes) -> str:
        """Apply the batch found at ``offset`` of ``partition`` (``value``: its message's value),
        in the order described above; what became of it (one of ``metrics.BATCH_OUTCOMES``)."""
        started = time.perf_counter()
        await self.objects.sync(partition)
        already = self.objects.applied_counts(partition, batch.job_id, batch.seq)
        if already is not None:  # redelivered after a crash: its effects are in Kafka already
            await self._done(batch.job_id, batch.seq, already)
            return metrics.DUPLICATE
        await self.job_states.read_all(self.partitions)  # jobs stopped before the worker started
        if self.objects.dry_runs:  # none of an ended dry run's batches is due: let go of its overlays
            self.objects.dry_runs.drop_ended(lambda job_id: self.job_states.get(job_id).terminal)
        await self.commands.fresh()  # a cancel or suspend answered by the API is known
        if batch.job_id in self.job_states.stopped or batch.job_id in self.commands.stopped:
            return metrics.STOPPED
        if self.job_states.get(batch.job_id).terminal:  # every batch counted: a late duplicate
            return metrics.DUPLICATE  # (its applied entry may be pruned, docs/architecture.md)
        if batch.hold or self.job_states.get(batch.job_id).holds_batches or batch.job_id in self.commands.held:
            await self._park(partition, offset, batch, value)
            return metrics.PARKED
        if batch.type == RELATIONSHIPS and batch.action == "post":
            await self.objects.sync_all(self.partitions)  # sources and targets live anywhere
        at = self.now()
        with self.objects.applying():
            if batch.dry_run:
                applied = self._dry_run(partition, batch, at)
            else:
                records = self._apply_records(batch, self.objects.index_of(partition), at)
                applied = AppliedBatch(
                    job_id=batch.job_id, tenant=batch.tenant, seq=batch.seq, at=at,
                    counts=records.counts.to_dict(), results=records.results, ops=records.ops, host=self.host,
                    sources=batch.sources,
                )
            landed = await self.publish(self.topics.changes, encode(applied), partition=partition)
            self.objects.record(partition, landed, applied, apply_ops=False)
        await self._done(batch.job_id, batch.seq, applied.count_delta)
        metrics.batch_applied(applied.count_delta, time.perf_counter() - started)
        return metrics.APPLIED

    async def _park(self, partition: int, offset: int, batch: RecordBatch, value: bytes) -> None:
        """Hold the batch back: copy it to the same partition of the held topic (compacted, so the
        batches topic may expire it) and, once the copy is in Kafka, tell the tracker where it lies."""
        key = held_key(batch.job_id, batch.seq, offset)
        copied = await self.publish(self.topics.held, value, key=key, partition=partition)
        held = BatchParked(job_id=batch.job_id, seq=batch.seq, partition=partition, offset=copied, origin=offset)
        await publish_job_event(self.publish, self.topics.job_events, held)

    def _dry_run(self, partition: int, batch: RecordBatch, at: str) -> AppliedBatch:
        """A dry run's batch applied to the job's overlay: its results and counts, no ops, and
        the would-be ops that rebuild the overlay elsewhere."""
        records = self._apply_records(batch, self.objects.dry_runs.of(batch.job_id, partition), at)
        return AppliedBatch(
            job_id=batch.job_id, tenant=batch.tenant, seq=batch.seq, at=at, counts=records.counts.to_dict(),
            results=records.results, ops=[], host=self.host, dry_run=True, would_be=would_be_ops(records.ops),
        )

    def _apply_records(self, batch: RecordBatch, index: IdIndex, at: str) -> AppliedRecords:
        """The batch applied to ``index`` (the partition's object index, or a dry run's overlay
        of it); an error of the whole batch fails every record."""
        try:
            with gc_paused():
                return apply_batch(batch.type, batch.action, batch.tenant, batch.items, index, at)
        except Exception as exc:
            log.exception("batch %s/%d could not be applied", batch.job_id, batch.seq,
                          extra=about_job(batch.job_id, batch.tenant))
            return fail_all(batch.items, internal_error(f"batch could not be applied: {exc!r}"))

    async def _done(self, job_id: str, seq: int, counts: Counts) -> None:
        done = BatchDone(job_id=job_id, seq=seq, counts=counts.to_dict(), at=self.now(), host=self.host)
        await publish_job_event(self.publish, self.topics.job_events, done)

    async def _fail(self, job_id: str, tenant: str, reason: str) -> None:
        await request_fail(self.publish, self.topics.job_events, job_id, tenant, reason, self.now())
