"""A topic tail's barriers: how it knows it is recent (``TopicTail.fresh``: checks of the end
offsets, run only while someone asks, one at a time, started before the latest one is too old),
and that a barrier does not wait for a partition its owner synced while it waits
(``TopicTail.caught_up``)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from bulkjobs.kafka.tail import TailReader, TopicTail
from bulkjobs.streams.state import JobStates

TOPIC = "events"


class FakeConsumer:
    """The consumer calls a tail makes; ``ends`` are the end offsets the broker would report."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.asked = 0  # end-offset requests
        self.failures = 0  # requests still to fail
        self.answers: asyncio.Queue[None] | None = None  # if set, each request waits for an item
        self.paused: set[int] = set()

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.answers is not None:
            await self.answers.get()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker gone")
        return {tp: self.ends[tp.partition] for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tp.partition for tp in tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tp.partition for tp in tps)


def tail_at(ends: dict[int, int], positions: dict[int, int]) -> tuple[TopicTail, FakeConsumer]:
    """A tail reading every partition of ``ends``, having handled up to ``positions``."""
    tail = TopicTail(TailReader("unused:9092", [TOPIC]), TOPIC, lambda partition, offset, value: None)
    consumer = FakeConsumer(ends)
    tail._consumer = consumer  # type: ignore[assignment]
    tail.wanted, tail.positions = set(ends), dict(positions)
    return tail, consumer


async def handled(tail: TopicTail, partition: int, position: int) -> None:
    """What the reader's fetch loop does once it handed a partition's messages to the tail."""
    tail.positions[partition] = position
    tail.wake()


async def test_a_tail_never_checked_waits_for_a_check_and_its_messages() -> None:
    tail, consumer = tail_at({0: 3, 1: 5}, {0: 3, 1: 2})
    asking = asyncio.create_task(tail.fresh(0.3))
    while consumer.asked == 0:
        await asyncio.sleep(0)
    assert not asking.done()
    await handled(tail, 1, 5)
    await asyncio.wait_for(asking, 5)
    assert consumer.asked == 1


async def test_a_recent_check_answers_at_once_and_starts_no_other() -> None:
    tail, consumer = tail_at({0: 3}, {0: 3})
    await tail.fresh(10.0)
    await tail.fresh(10.0)
    await tail.fresh(10.0)
    assert consumer.asked == 1


async def test_callers_waiting_together_share_one_check() -> None:
    tail, consumer = tail_at({0: 3}, {0: 0})
    waiting = [asyncio.create_task(tail.fresh(0.3)) for _ in range(5)]
    while consumer.asked == 0:
        await asyncio.sleep(0)
    await handled(tail, 0, 3)
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert consumer.asked == 1


async def test_a_check_older_than_half_the_age_starts_the_next_without_waiting_for_it() -> None:
    tail, consumer = tail_at({0: 3}, {0: 3})
    tail._fresh_at = asyncio.get_running_loop().time() - 6.0
    await tail.fresh(10.0)  # 6 s old: recent enough, and the next check starts
    assert consumer.asked == 0 and tail._checking is not None
    await tail._checking
    assert consumer.asked == 1
    await tail.fresh(10.0)
    assert consumer.asked == 1


async def test_a_check_that_fails_is_tried_again_and_the_caller_waits(monkeypatch) -> None:
    monkeypatch.setattr("bulkjobs.kafka.tail.FRESH_RETRY", 0.01)
    tail, consumer = tail_at({0: 3}, {0: 3})
    consumer.failures = 2
    await asyncio.wait_for(tail.fresh(0.3), 5)
    assert consumer.asked == 3


async def test_a_caller_cancelled_leaves_the_check_to_the_others() -> None:
    tail, consumer = tail_at({0: 3}, {0: 0})
    first, second = asyncio.create_task(tail.fresh(0.3)), asyncio.create_task(tail.fresh(0.3))
    while consumer.asked == 0:
        await asyncio.sleep(0)
    first.cancel()
    await handled(tail, 0, 3)
    await asyncio.wait_for(second, 5)
    assert consumer.asked == 1


async def test_a_barrier_is_done_with_a_partition_its_caller_came_to_hold_while_it_waits() -> None:
    tail, consumer = tail_at({0: 3, 1: 5}, {0: 3, 1: 2})
    held: set[int] = set()
    waiting = asyncio.create_task(tail.caught_up([0, 1], held=held.__contains__))
    while consumer.asked == 0:
        await asyncio.sleep(0)
    tail.unwant([1])  # let go, not held: still waited for
    await asyncio.sleep(0.05)
    assert not waiting.done()
    held.add(1)  # synced by its owner, then let go
    tail.wake()
    await asyncio.wait_for(waiting, 5)
    assert consumer.paused == {1}


async def test_the_first_read_of_every_status_ends_while_the_owner_syncs_and_writes_a_partition() -> None:
    """The race that hung a restarted worker's appliers: they list the status partitions not
    synced yet and ask for their ends; meanwhile the tracker syncs partition 1 (empty then), lets
    it go, and writes two statuses to it; the appliers' answer says 2, where the tail, paused,
    stays at 0."""
    reader = TailReader("unused:9092", [TOPIC])
    states = JobStates(lambda on_message: reader.tail(TOPIC, on_message))
    consumer = FakeConsumer({0: 0, 1: 0})
    consumer.answers = asyncio.Queue()
    tail = states.tail
    assert isinstance(tail, TopicTail)
    tail._consumer = consumer  # type: ignore[assignment]
    tail.want({0: 0, 1: 0})
    syncing = asyncio.create_task(states.sync(1))
    while consumer.asked < 1:
        await asyncio.sleep(0)
    reading = asyncio.create_task(states.read_all(2))
    while consumer.asked < 2:
        await asyncio.sleep(0)
    consumer.answers.put_nowait(None)  # the tracker's answer: partition 1 is empty
    await asyncio.wait_for(syncing, 5)
    assert states.synced == {1} and consumer.paused == {1}
    consumer.ends[1] = 2  # the tracker wrote two statuses to the partition it owns
    consumer.answers.put_nowait(None)
    await asyncio.wait_for(reading, 5)
    assert tail.positions[1] == 0
