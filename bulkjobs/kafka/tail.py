"""Reading whole topics (every partition, from the start, no consumer group) into memory.

Workers use it for state rebuilt from a topic: the object index (read lazily, a partition from
the moment the worker needs it) and every job's state. ``caught_up`` is the barrier that makes
a freshly assigned partition safe to write: it waits until everything in the topic, as of the
call, has been handed to the callback. A tail can also start at the topic's end, and tell how
recent it is (``fresh``): it has handled everything written more than so long ago. It learns
that with a check (the end offsets, then a wait until it has handled up to them) run only while
someone asks, so an idle worker asks the broker nothing.

Tails of several topics can share one ``TailReader``, one consumer and so one fetch loop: an
idle fetch loop costs the broker about 2% of a core at a 50 ms wait, whatever the partitions
it names, so a worker's status and command tails fetch together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bulkjobs.kafka import clients

log = logging.getLogger(__name__)

FRESH_RETRY = 0.5  # seconds before a freshness check that failed is tried again

OnMessage = Callable[[int, int, bytes | None], None]  # partition, offset, value (None: a tombstone)


class TailReader:
    """One consumer, assigned every partition of ``topics`` (each paused until a tail wants
    it), whose fetch loop hands each message to the tail of its topic."""

    def __init__(self, brokers: str, topics: Iterable[str]) -> None:
        self.brokers = brokers
        self.topics = list(topics)
        self.tails: dict[str, TopicTail] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None  # the fetch loop (kept: the loop holds tasks weakly)

    def tail(self, topic: str, on_message: OnMessage) -> TopicTail:
        """The tail of ``topic`` (one of ``topics``), handing each message to ``on_message``."""
        return TopicTail(self, topic, on_message)

    async def ensure_started(self, partitions: int) -> AIOKafkaConsumer:
        """The consumer, started with ``partitions`` partitions of each topic assigned, and its loop."""
        async with self._starting:
            if self.consumer is None:
                consumer = clients.consumer(self.brokers, auto_offset_reset="earliest",
                                            max_partition_fetch_bytes=8 * 1024 * 1024)
                await consumer.start()
                tps = [TopicPartition(topic, p) for topic in self.topics for p in range(partitions)]
                consumer.assign(tps)
                # A position for each, or the fetcher asks for offsets committed by a group it has not.
                await consumer.seek_to_beginning(*tps)
                consumer.pause(*tps)  # until a tail wants them
                self.consumer = consumer
                self._task = asyncio.create_task(self._run(consumer), name="tail:" + ",".join(self.topics))
            return self.consumer

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=500, max_records=None)
            except Exception:
                log.exception("reading %s failed; retrying", ", ".join(self.topics))
                await asyncio.sleep(0.5)
                continue
            moved = {self.tails[tp.topic] for tp, messages in fetched.items()
                     if tp.topic in self.tails and self.tails[tp.topic].handle(tp.partition, messages)}
            for tail in moved:
                tail.wake()


class TopicTail:
    """A topic read by a ``TailReader`` (made by ``TailReader.tail``): the partitions wanted,
    how far each was handled, and the barriers."""

    def __init__(self, reader: TailReader, topic: str, on_message: OnMessage) -> None:
        self.reader = reader
        assert topic in reader.topics and topic not in reader.tails
        reader.tails[topic] = self
        self.topic = topic
        self.on_message = on_message
        self.positions: dict[int, int] = {}
        self._moved = asyncio.Event()  # set, and replaced, when a partition moved or was let go
        self._starting = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.wanted: set[int] = set()
        self._fresh_at = float("-inf")  # loop time at which the latest check that ended asked for the ends
        self._checking: asyncio.Task[None] | None = None  # the freshness check under way

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
            self.wake()

    def wake(self) -> None:
        """Have the barriers look again: a partition moved, or was let go."""
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _start(self, partitions: int, lazy: bool, from_end: bool) -> None:
        consumer = await self.reader.ensure_started(partitions)
        if from_end:
            ends = await consumer.end_offsets([TopicPartition(self.topic, p) for p in range(partitions)])
            starts = {tp.partition: offset for tp, offset in ends.items()}
        else:
            starts = dict.fromkeys(range(partitions), 0)
        self.positions = starts
        self._consumer = consumer
        if not lazy:
            self.want(starts)

    def handle(self, partition: int, messages: list[ConsumerRecord[bytes, bytes]]) -> bool:
        """Hand fetched messages of ``partition`` to the callback; whether the tail moved."""
        if partition not in self.wanted:
            return False  # fetched just before it was let go
        for message in messages:
            try:
                self.on_message(partition, message.offset, message.value)
            except Exception:  # one unreadable message must not stop the whole view
                log.exception("skipping unreadable message %s-%d@%d", self.topic, partition, message.offset)
        if messages:
            self.positions[partition] = messages[-1].offset + 1
        return True

    async def caught_up(self, partitions: Iterable[int], held: Callable[[int], bool] = lambda partition: False) -> None:
        """Return once every message written to ``partitions`` before this call was handled, or
        is ``held`` by the caller's state without being read: a partition its owner synced
        during the wait and let go (``unwant``, which wakes the waiters) is done, though the
        tail, paused there, never reaches an end asked for after the owner's next writes."""
        assert self._consumer is not None
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.want({tp.partition: 0 for tp in tps})  # from the beginning, if not read yet
        ends = await self._consumer.end_offsets(tps)

        def done() -> bool:
            return all(held(tp.partition) or self.positions.get(tp.partition, 0) >= end for tp, end in ends.items())

        while not done():
            try:
                await asyncio.wait_for(self._moved.wait(), timeout=5.0)
            except TimeoutError:
                log.warning("still catching up on %s: at %s, to reach %s", self.topic,
                            {p: self.positions.get(p) for p in (tp.partition for tp in tps)},
                            {tp.partition: end for tp, end in ends.items()})

    async def fresh(self, age: float) -> None:
        """Return once the tail has handled everything written to its partitions more than
        ``age`` seconds ago. A check starts once the latest is older than half of ``age``, so
        that under load (a batch asks before each apply) the next is under way before it is
        needed and a batch rarely waits; no one asking, no check runs (a loop that asked the
        broker 20 times a second in every worker cost CPU while idle)."""
        loop = asyncio.get_running_loop()
        while True:
            old = loop.time() - self._fresh_at
            if old > age / 2 and (self._checking is None or self._checking.done()):
                self._checking = asyncio.create_task(self._check(), name=f"fresh:{self.topic}")
            if old <= age:
                return
            assert self._checking is not None
            await asyncio.shield(self._checking)  # a waiter cancelled leaves the check to the others

    async def _check(self) -> None:
        asked = asyncio.get_running_loop().time()
        try:
            await self.caught_up(self.wanted)
        except Exception:
            log.exception("checking how recent the tail of %s is failed; retrying", self.topic)
            await asyncio.sleep(FRESH_RETRY)
        else:
            self._fresh_at = max(self._fresh_at, asked)
