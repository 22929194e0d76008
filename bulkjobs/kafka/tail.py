"""Reading a whole topic (every partition, from the start, no consumer group) into memory.

Workers use it for state rebuilt from a topic: the object index (read lazily, a partition from
the moment the worker needs it) and every job's state. ``caught_up`` is the barrier that makes
a freshly assigned partition safe to write: it waits until everything in the topic, as of the
call, has been handed to the callback. A tail can also start at the topic's end, and tell how
recent it is (``fresh``): it has handled everything written more than so long ago.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs.kafka import clients

log = logging.getLogger(__name__)

FRESH_INTERVAL = 0.05  # seconds between two rounds of the freshness check (``fresh``)

OnMessage = Callable[[int, int, bytes | None], None]  # partition, offset, value (None: a tombstone)


class TopicTail:
    def __init__(self, brokers: str, topic: str, on_message: OnMessage) -> None:
        self.brokers = brokers
        self.topic = topic
        self.on_message = on_message
        self.positions: dict[int, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Condition()
        self._starting = asyncio.Lock()
        self.wanted: set[int] = set()
        self._fresh_at = float("-inf")  # loop time of the latest end offsets the tail has reached
        self._refreshed = asyncio.Condition()
        self._fresh_task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._consumer is not None

    async def ensure_started(self, partitions: int, *, lazy: bool = False, from_end: bool = False) -> None:
        """Start reading; with ``lazy``, a partition is read only once ``want`` names it; with
        ``from_end``, only what is written from now on is read."""
        async with self._starting:
            if self._consumer is None:
                await self._start(partitions, lazy, from_end)

    def want(self, starts: Mapping[int, int]) -> None:
        """Read these partitions too (those not read yet), each from the offset it maps to."""
        assert self._consumer is not None
        new = [TopicPartition(self.topic, p) for p in starts if p not in self.wanted]
        for tp in new:
            self._consumer.seek(tp, starts[tp.partition])
            self.positions[tp.partition] = starts[tp.partition]
            self.wanted.add(tp.partition)
        if new:
            self._consumer.resume(*new)

    async def want_from_end(self, partitions: Iterable[int]) -> None:
        """Read these partitions too (those not read yet), from their end: what is written from now on."""
        assert self._consumer is not None
        tps = [TopicPartition(self.topic, p) for p in partitions if p not in self.wanted]
        if tps:
            ends = await self._consumer.end_offsets(tps)
            self.want({tp.partition: offset for tp, offset in ends.items()})

    def unwant(self, partitions: Iterable[int]) -> None:
        """Stop reading these partitions; ``want`` reads them again from where it is told."""
        assert self._consumer is not None
        gone = [TopicPartition(self.topic, p) for p in partitions if p in self.wanted]
        self.wanted.difference_update(tp.partition for tp in gone)
        if gone:
            self._consumer.pause(*gone)

    async def _start(self, partitions: int, lazy: bool, from_end: bool) -> None:
        consumer = clients.consumer(
            self.brokers,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        consumer.assign(tps)
        if from_end:
            ends = await consumer.end_offsets(tps)
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
            self.positions = {tp.partition: offset for tp, offset in ends.items()}
        else:
            await consumer.seek_to_beginning(*tps)
            self.positions = {p: 0 for p in range(partitions)}
        self.wanted = set() if lazy else set(range(partitions))
        consumer.pause(*[tp for tp in tps if tp.partition not in self.wanted])
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"tail:{self.topic}")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                fetched = await self._consumer.getmany(timeout_ms=500, max_records=None)
            except Exception:
                log.exception("reading %s failed; retrying", self.topic)
                await asyncio.sleep(0.5)
                continue
            for tp, messages in fetched.items():
                if tp.partition not in self.wanted:
                    continue  # fetched just before it was let go
                for message in messages:
                    try:
                        self.on_message(tp.partition, message.offset, message.value)
                    except Exception:  # one unreadable message must not stop the whole view
                        log.exception("skipping unreadable message %s@%d", tp, message.offset)
                if messages:
                    self.positions[tp.partition] = messages[-1].offset + 1
            if fetched:
                async with self._moved:
                    self._moved.notify_all()

    async def caught_up(self, partitions: Iterable[int]) -> None:
        """Return once every message written to ``partitions`` before this call was handled."""
        assert self._consumer is not None
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.want({tp.partition: 0 for tp in tps})  # from the beginning, if not read yet
        ends = await self._consumer.end_offsets(tps)

        def done() -> bool:
            return all(self.positions.get(tp.partition, 0) >= end for tp, end in ends.items())

        async with self._moved:
            while not done():
                try:
                    await asyncio.wait_for(self._moved.wait(), timeout=5.0)
                except TimeoutError:
                    log.warning("still catching up on %s: at %s, to reach %s", self.topic,
                                {p: self.positions.get(p) for p in (tp.partition for tp in tps)},
                                {tp.partition: end for tp, end in ends.items()})

    async def fresh(self, age: float) -> None:
        """Return once the tail has handled everything written to its partitions more than
        ``age`` seconds ago (a background check asks for the end offsets every
        ``FRESH_INTERVAL`` and waits until the tail has read up to them)."""
        loop = asyncio.get_running_loop()
        if self._fresh_task is None:
            self._fresh_task = asyncio.create_task(self._keep_fresh(), name=f"fresh:{self.topic}")
        async with self._refreshed:
            while loop.time() - self._fresh_at > age:
                await self._refreshed.wait()

    async def _keep_fresh(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            try:
                await self.caught_up(self.wanted)
            except Exception:
                log.exception("checking how recent the tail of %s is failed; retrying", self.topic)
            else:
                async with self._refreshed:
                    self._fresh_at = asked
                    self._refreshed.notify_all()
            await asyncio.sleep(FRESH_INTERVAL)
