"""How a topic tail knows it is recent (``TopicTail.fresh``): checks of the end offsets, run only
while someone asks, one at a time, started before the latest one is too old."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from bulkjobs.kafka.tail import TailReader, TopicTail

TOPIC = "events"


class FakeConsumer:
    """The consumer calls a tail makes; ``ends`` are the end offsets the broker would report."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.asked = 0  # end-offset requests
        self.failures = 0  # requests still to fail

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker gone")
        return {tp: self.ends[tp.partition] for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass


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
    async with tail.moved:
        tail.moved.notify_all()


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
