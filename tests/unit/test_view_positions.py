"""Where the store is in each partition, kept in the view with the rows of what it read
(``store.writer``, read by ``store.feeder`` when partitions are assigned)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from bulkjobs.kafka.topics import TopicNames
from bulkjobs.store.feeder import _write
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter, read_positions

NAMES = TopicNames("t")


def beat(partition: int, offset: int) -> ConsumerRecord:
    value = b'{"worker": "w", "host": "h", "pid": 1, "at": "2026-01-01T00:00:00Z", "partitions": []}'
    return ConsumerRecord(NAMES.workers, partition, offset, 0, 0, None, value, None, 0, len(value), [])


async def test_a_poll_leaves_the_offset_after_its_last_message_of_each_partition(tmp_path: Path) -> None:
    db = await connect(tmp_path / "view.db")
    try:
        writer = ViewWriter(db)
        assert await read_positions(db) == {}  # a new view: every topic is read from its beginning
        await _write(writer, NAMES, {TopicPartition(NAMES.workers, 0): [beat(0, 4), beat(0, 5)],
                                     TopicPartition(NAMES.workers, 1): [beat(1, 0)]})
        assert await read_positions(db) == {(NAMES.workers, 0): 6, (NAMES.workers, 1): 1}
        await _write(writer, NAMES, {TopicPartition(NAMES.workers, 1): [beat(1, 1)],
                                     TopicPartition(NAMES.workers, 2): []})
        assert await read_positions(db) == {(NAMES.workers, 0): 6, (NAMES.workers, 1): 2}
    finally:
        await db.close()


async def test_positions_are_written_in_the_transaction_of_the_rows(tmp_path: Path) -> None:
    db = await connect(tmp_path / "view.db")
    try:
        broken = {"worker": "w"}  # a heartbeat the writer cannot store: the transaction rolls back
        with pytest.raises(KeyError):
            await ViewWriter(db).write([], [], [broken], {(NAMES.workers, 0): 9})
        assert await read_positions(db) == {}
    finally:
        await db.close()
