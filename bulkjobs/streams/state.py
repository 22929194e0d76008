"""The worker's in-memory state, rebuilt from topics rather than kept in Faust tables.

``ObjectState`` is the object index of every partition, fed by the changes topic (the worker's
own writes are applied directly and skipped when the tail reads them back) together with the
batches already applied, so that a redelivered batch is recognised and not applied again.
``CancelledJobs`` is the set of jobs whose batches must no longer be applied, fed by the status
topic.
"""

from __future__ import annotations

from typing import Any

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import CANCELLED, DELETED
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.streams.tail import TopicTail
from bulkjobs.streams.topics import AppliedBatch, decode


class ObjectState:
    def __init__(self, brokers: str, topic: str) -> None:
        self.index = ObjectIndex()
        self.applied: dict[tuple[str, int], Counts] = {}
        self.offsets: dict[int, int] = {}  # partition -> last offset already in the index
        self.synced: set[int] = set()  # partitions caught up since they were assigned
        self.tail = TopicTail(brokers, topic, self._on_change)

    def _on_change(self, partition: int, offset: int, value: bytes) -> None:
        if offset <= self.offsets.get(partition, -1):
            return  # our own write, already applied
        self.record(partition, offset, AppliedBatch(**decode(value)), apply_ops=True)

    def record(self, partition: int, offset: int, applied: AppliedBatch, apply_ops: bool) -> None:
        if apply_ops:
            for op in applied.ops:
                self.index.apply_op(op)
        self.applied[(applied.job_id, applied.seq)] = applied.count_delta
        self.offsets[partition] = max(offset, self.offsets.get(partition, -1))

    async def sync(self, partition: int) -> None:
        """Wait, once per assignment, until the index holds every change of ``partition``."""
        if partition not in self.synced:
            await self.tail.caught_up([partition])
            self.synced.add(partition)

    async def sync_all(self, partitions: int) -> None:
        """Wait until the index holds every change of every partition (for cross-partition reads)."""
        await self.tail.caught_up(range(partitions))

    def revoke(self, partitions: set[int]) -> None:
        self.synced -= partitions


class CancelledJobs:
    def __init__(self, brokers: str, topic: str) -> None:
        self.jobs: set[str] = set()
        self.tail = TopicTail(brokers, topic, self._on_status)

    def _on_status(self, partition: int, offset: int, value: bytes) -> None:
        status: dict[str, Any] = decode(value)
        if status.get("status") in (CANCELLED, DELETED):
            self.jobs.add(status["id"])

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs
