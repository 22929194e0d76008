"""The process that feeds the SQLite view from the changes, status and workers topics, and
runs the export jobs (``exporter``) as their statuses come in.

Where it is in each partition is written in the SQLite transaction holding the rows of the
messages read, and it reads on from there whenever partitions are assigned to it: a view that
lost its last commits (an OS crash or a power cut before SQLite's WAL reached the disk) reads
those messages again, and a view that is new (or dropped by an upgrade) reads every topic from
its beginning. The writer's idempotent upserts make a replay harmless. It also commits the
Kafka offsets after each transaction, for the tools that watch a group's lag. What a status
means for files on disk (an export's start, pause, stop, removal; a deleted job's original
upload and export files leaving the disk) is done after that commit. With
``BULKJOBS_METRICS_PORT`` it serves its metrics (``store.metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator

import aiosqlite
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from bulkjobs.domain.identity import is_job_id
from bulkjobs.domain.jobs import DELETED
from bulkjobs.kafka import clients
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.topics import TopicNames, decode
from bulkjobs.metrics import consumer_lag, serve
from bulkjobs.settings import Settings
from bulkjobs.store import metrics
from bulkjobs.store.exporter import Exports, Reporter
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter, read_positions

log = logging.getLogger(__name__)

# A poll that brought applied batches is topped up with what arrives within GATHER_SECONDS, up
# to GATHER_BYTES of messages, before it is written. Object ids are hashes, so a transaction's
# inserts dirty pages all over the id index, and each page is written at every commit whatever
# it holds: once the view holds millions of objects, a transaction of tens of thousands of
# records dirties nearly every page of that index (90 MB at 2M objects), so the bytes written
# per record fall only with bigger transactions. Measured on the writer alone, a 200k-record job
# with 2M objects in the view: 24 batches of 1,000 a transaction wrote 1.9 GB and cost 16.1 µs a
# record, 128 batches 0.6 GB and 13.3 µs (8.3 on an empty view). A store that keeps up still
# writes small transactions; one that lags gathers up to this much.
GATHER_SECONDS = 0.1
GATHER_BYTES = 32 * 1024 * 1024


async def _caught_up(consumer: AIOKafkaConsumer, topic: str) -> bool:
    """Whether the consumer has read every partition of ``topic`` it holds to its end."""
    held = [tp for tp in consumer.assignment() if tp.topic == topic]
    if not held:
        return False
    ends: dict[TopicPartition, int] = await consumer.end_offsets(held)
    for tp in held:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


def _fetched_bytes(fetched: dict[TopicPartition, list[ConsumerRecord]]) -> int:
    return sum(len(message.value or b"") for messages in fetched.values() for message in messages)


async def _gather(consumer: AIOKafkaConsumer, changes: str,
                  fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """Add to ``fetched`` what arrives within ``GATHER_SECONDS``, up to ``GATHER_BYTES``, if it
    holds applied batches (a poll of statuses or heartbeats alone is written at once)."""
    if not any(tp.topic == changes for tp in fetched):
        return
    loop = asyncio.get_running_loop()
    deadline, size = loop.time() + GATHER_SECONDS, _fetched_bytes(fetched)
    while size < GATHER_BYTES and (left := deadline - loop.time()) > 0:
        more = await consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=None)
        for tp, messages in more.items():
            fetched.setdefault(tp, []).extend(messages)
        size += _fetched_bytes(more)


def _messages(fetched: dict[TopicPartition, list[ConsumerRecord]], topic: str) -> Iterator[ConsumerRecord]:
    """``topic``'s messages in ``fetched``, by partition, in order."""
    for tp in sorted((tp for tp in fetched if tp.topic == topic), key=lambda tp: tp.partition):
        yield from fetched[tp]


def _raw_values(fetched: dict[TopicPartition, list[ConsumerRecord]], topic: str) -> Iterator[bytes]:
    """The values of ``topic``'s messages in ``fetched``, as they came (the writer reads them)."""
    for message in _messages(fetched, topic):
        if message.value is not None:
            yield message.value
        else:  # not written by bulkjobs: the view goes on without it
            log.warning("skipping a message without a value: %s-%d@%d", topic, message.partition, message.offset)


def _values(fetched: dict[TopicPartition, list[ConsumerRecord]], topic: str,
            tombstones: bool = False) -> Iterator[dict]:
    """The JSON objects of ``topic``'s messages in ``fetched``, decoded as they are asked for,
    so the garbage collector never scans a whole poll's decoded messages. With ``tombstones``,
    messages without a value are skipped quietly."""
    for message in _messages(fetched, topic):
        if message.value is None and tombstones:
            continue
        try:
            value = decode(message.value)
        except (orjson.JSONDecodeError, TypeError):
            value = None
        if isinstance(value, dict):
            yield value
        else:  # not written by bulkjobs: the view goes on without it
            log.warning("skipping a message that is not a JSON object: %s-%d@%d", topic, message.partition,
                        message.offset)


async def _write(writer: ViewWriter, names: TopicNames,
                 fetched: dict[TopicPartition, list[ConsumerRecord]]) -> list[dict]:
    """Write one poll's messages into the view in one transaction, with where they leave the
    store in each partition; the job statuses among them. A job status's tombstone follows a
    deleted job's status, which removed the job already."""
    positions = {(tp.topic, tp.partition): messages[-1].offset + 1 for tp, messages in fetched.items() if messages}
    return await writer.write(_raw_values(fetched, names.changes), _values(fetched, names.status, tombstones=True),
                              _values(fetched, names.workers), positions)


class _ReadOnFromTheView(ConsumerRebalanceListener):
    """Seeks each partition assigned to where the view says it was read up to, or to its
    beginning if the view holds nothing of it (not the group's committed offset: the view's
    last commits may have been lost after the offsets were committed)."""

    def __init__(self, consumer: AIOKafkaConsumer, db: aiosqlite.Connection) -> None:
        self.consumer, self.db = consumer, db

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        positions = await read_positions(self.db)
        unread = []
        for tp in assigned:
            if (tp.topic, tp.partition) in positions:
                self.consumer.seek(tp, positions[(tp.topic, tp.partition)])
            else:
                unread.append(tp)
        if unread:
            await self.consumer.seek_to_beginning(*unread)


def remove_uploads(uploads: UploadFiles, statuses: list[dict]) -> None:
    """Remove the original file of each job deleted among these statuses: an expired job's is
    removed only here (the API also removes it when a user deletes a job)."""
    for status in statuses:
        if status.get("status") == DELETED and is_job_id(status.get("id")):
            uploads.remove(status["id"])


async def feed(settings: Settings, stop: asyncio.Event) -> None:
    names = TopicNames(settings.topic_prefix)
    await ensure_topics(settings)
    db = await connect(settings.db_path)
    writer = ViewWriter(db)
    topics = (names.changes, names.status, names.workers)
    consumer = clients.consumer(
        settings.kafka_brokers,
        group_id=names.store_group,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval * 1000),
    )
    consumer.subscribe(topics, listener=_ReadOnFromTheView(consumer, db))
    reporter = Reporter(settings)
    exports = Exports(settings, reporter)
    uploads = UploadFiles(settings.uploads_dir)
    await consumer.start()
    await reporter.start()
    log.info("store feeding %s", settings.db_path)
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=None)
            if fetched:
                await _gather(consumer, names.changes, fetched)
                statuses = await _write(writer, names, fetched)
                await consumer.commit()
                remove_uploads(uploads, statuses)
                await exports.observe(statuses)
            if settings.metrics_port:
                metrics.CONSUMER_LAG.show(await consumer_lag(consumer, topics))
            # Checked after what was fetched is written, so the view holds every status read.
            if not exports.ready and await _caught_up(consumer, names.status):
                await exports.start_pending(db)
    finally:
        await exports.stop()
        await reporter.stop()
        await consumer.stop()
        await db.close()


def run_feeder(settings: Settings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await feed(settings, stop)

    metrics.REGISTRY.register(metrics.ViewCollector(settings.db_path))
    serve(metrics.REGISTRY, settings.host, settings.metrics_port, "store")
    asyncio.run(main())
