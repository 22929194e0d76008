"""Reading messages back from a topic by partition and offset (no consumer group).

The job tracker uses it to release a job's parked batches, from the held topic (or, parked by
an older version, the batches topic): on resume it sends them again, and each run of a
scheduled definition gets copies of the definition's batches. The snapshot restorer uses it to
read the end of a partition of the snapshots topic. Between two reads its consumer fetches
nothing: a partition it read is paused (an idle consumer that keeps an assignment polls the
broker every 50 ms, forever).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bulkjobs.kafka import clients

Entry = tuple[int, bytes | None, bytes | None]  # offset, key, value
READ_TIMEOUT = 60.0  # seconds a range may take to read before the reader gives up (it should exist)


class Refetcher:
    def __init__(self, brokers: str, topic: str) -> None:
        self.brokers, self.topic = brokers, topic
        self._consumer: AIOKafkaConsumer | None = None  # made on first use, inside the event loop
        self._lock = asyncio.Lock()  # one seek-and-read at a time on the one consumer

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = clients.consumer(self.brokers, max_partition_fetch_bytes=8 * 1024 * 1024)
            await self._consumer.start()
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @contextlib.asynccontextmanager
    async def _reading(self, partition: int, offset: int) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition]]:
        """The consumer on ``partition`` alone, from ``offset``, for one read; the partition is
        paused after it (else the consumer goes on fetching it, every 50 ms, until the next read)."""
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            try:
                yield consumer, tp
            finally:
                consumer.pause(tp)

    async def fetch(self, partition: int, offset: int) -> bytes:
        async with self._reading(partition, offset) as (consumer, tp):
            while True:
                message = await consumer.getone(tp)
                if message.offset == offset:
                    return message.value or b""

    async def fetch_copy(self, partition: int, offset: int, key: bytes) -> bytes | None:
        """The value under ``key`` at ``offset`` of a compacted topic, or, if compaction replaced
        it by a newer copy, at the next offset with that key; None if the key holds none (it was
        dropped by a tombstone, or compacted away after it)."""
        async with self._reading(partition, offset) as (consumer, tp):
            reached = offset - 1
            deadline = asyncio.get_running_loop().time() + READ_TIMEOUT
            while asyncio.get_running_loop().time() < deadline:
                message = await self._next(consumer, tp)
                if message is None:  # nothing more for now: read past every copy there was?
                    end = int((await consumer.end_offsets([tp]))[tp])
                    # (at least up to ``offset``, where one was acked: a broker may report too low an end)
                    if reached >= max(end - 1, offset):
                        return None
                    continue
                reached = message.offset
                if message.key == key and message.value is not None:
                    return bytes(message.value)
        raise TimeoutError(f"{self.topic}[{partition}]: {key!r} not read from offset {offset} "
                           f"in {READ_TIMEOUT:.0f} s (at {reached})")

    @staticmethod
    async def _next(consumer: AIOKafkaConsumer, tp: TopicPartition) -> ConsumerRecord[bytes, bytes] | None:
        """The next message of ``tp``, or None if none comes within half a second."""
        try:
            return await asyncio.wait_for(consumer.getone(tp), timeout=0.5)
        except TimeoutError:
            return None

    async def end_offset(self, partition: int) -> int:
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(self.topic, partition)
            return int((await consumer.end_offsets([tp]))[tp])

    async def read(self, partition: int, start: int, end: int) -> list[Entry]:
        """The messages from offset ``start`` up to (not including) ``end``, which must exist;
        TimeoutError if they cannot be read (the snapshot restorer then reads the history)."""
        entries: list[Entry] = []
        if start >= end:
            return entries
        async with self._reading(partition, start) as (consumer, tp):
            reached = start - 1  # compaction may have removed offsets: go by the last one seen
            deadline = asyncio.get_running_loop().time() + READ_TIMEOUT
            while reached < end - 1:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.topic}[{partition}]: offsets {start}..{end - 1} not read "
                                       f"in {READ_TIMEOUT:.0f} s (at {reached})")
                for m in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    reached = m.offset
                    if m.offset < end:
                        entries.append((m.offset, m.key, m.value))
        return entries
