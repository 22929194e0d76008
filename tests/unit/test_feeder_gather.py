"""The store feeder tops up a poll of applied batches before writing it (``feeder._gather``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from bulkjobs.store import feeder
from bulkjobs.store.feeder import GATHER_BYTES, _gather

CHANGES, STATUS = "bulkjobs-changes", "bulkjobs-status"


@dataclass
class Message:
    """What the feeder reads of a consumer record."""

    value: bytes


class Consumer:
    """Hands out the polls it was given, one per ``getmany``, then nothing (after the timeout)."""

    def __init__(self, *polls: dict[TopicPartition, list[Message]]) -> None:
        self.polls = list(polls)
        self.calls = 0

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Message]]:
        self.calls += 1
        if self.polls:
            return self.polls.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def poll(topic: str, partition: int, *sizes: int) -> dict[TopicPartition, list[Message]]:
    return {TopicPartition(topic, partition): [Message(bytes(size)) for size in sizes]}


async def gather(consumer: Consumer, fetched: dict[TopicPartition, list[Message]]) -> None:
    await _gather(consumer, CHANGES, fetched)  # type: ignore[arg-type]  # the fakes stand in for aiokafka's


async def test_a_poll_without_applied_batches_is_written_at_once() -> None:
    consumer = Consumer(poll(CHANGES, 0, 10))
    fetched = poll(STATUS, 0, 10)
    await gather(consumer, fetched)
    assert consumer.calls == 0
    assert fetched == poll(STATUS, 0, 10)


async def test_what_arrives_meanwhile_is_added_in_order_per_partition() -> None:
    consumer = Consumer(poll(CHANGES, 0, 2, 3), {**poll(CHANGES, 1, 4), **poll(STATUS, 0, 5)}, poll(CHANGES, 0, 6))
    fetched = poll(CHANGES, 0, 1)
    await gather(consumer, fetched)
    assert {tp: [len(m.value) for m in messages] for tp, messages in fetched.items()} == {
        TopicPartition(CHANGES, 0): [1, 2, 3, 6], TopicPartition(CHANGES, 1): [4], TopicPartition(STATUS, 0): [5]}
    assert not consumer.polls  # every poll was taken, then nothing more came until the deadline


@pytest.mark.parametrize(("size", "tops_up"), [(GATHER_BYTES - 1, True), (GATHER_BYTES, False),
                                                 (GATHER_BYTES + 1, False)])
async def test_a_poll_of_gather_bytes_is_big_enough(size: int, tops_up: bool) -> None:
    consumer = Consumer(poll(CHANGES, 1, 1))
    fetched = poll(CHANGES, 0, size)
    await gather(consumer, fetched)
    assert (TopicPartition(CHANGES, 1) in fetched) is tops_up


async def test_gathering_stops_once_gather_bytes_arrived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeder, "GATHER_SECONDS", 60.0)  # the size ends it, not the deadline
    consumer = Consumer(poll(CHANGES, 0, GATHER_BYTES // 2), poll(CHANGES, 0, GATHER_BYTES // 2), poll(CHANGES, 0, 1))
    fetched = poll(CHANGES, 0, 1)
    await gather(consumer, fetched)
    assert consumer.calls == 2
    assert len(fetched[TopicPartition(CHANGES, 0)]) == 3


def test_values_of_any_kind_count() -> None:
    assert feeder._fetched_bytes({TopicPartition(CHANGES, 0): [Message(b"abc"), Message(None)]}) == 3  # type: ignore[arg-type, list-item]
