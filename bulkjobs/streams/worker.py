"""The Faust worker app: its topics, agents and timers, wired to the classes that do the work.

``apply_batches`` owns partitions of the batches topic and hands each message to the
``BatchApplier`` (``applier.py``). ``track_jobs`` owns partitions of the job-events topic and
hands each message to the ``JobTracker`` (``tracker.py``), which publishes each job's new
``JobStatus`` to the same partition of the status topic, the jobs' changelog (see
``state.JobStates`` and docs/architecture.md for why not a Faust table). A timer has three looks at the
jobs of the job-events partitions this worker owns: the ``Scheduler`` fires definitions, the
``UploadWatch`` fails jobs whose upload was interrupted, the ``Expiry`` deletes the finished
jobs past their retention, the ``WebhookSender`` delivers the completion webhooks of ended
jobs. Another writes the snapshots of the object index of the batches partitions it owns
(``snapshots.py``), another sends the worker's heartbeat, and with ``BULKJOBS_METRICS_PORT`` one
more updates its gauges (``streams.metrics``). An error
handling one message or one job fails that job, with the reason; it never stops an agent or a
timer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP

from bulkjobs.clock import utc_now
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.clients import FAUST_PRODUCER
from bulkjobs.kafka.refetch import Refetcher
from bulkjobs.kafka.tail import TailReader
from bulkjobs.kafka.topics import TopicNames, WorkerHeartbeat, encode
from bulkjobs.logs import logging_config
from bulkjobs.metrics import serve
from bulkjobs.settings import Settings
from bulkjobs.streams import metrics
from bulkjobs.streams.applier import BatchApplier
from bulkjobs.streams.effects import Message, Owned, Publish
from bulkjobs.streams.expiry import Expiry
from bulkjobs.streams.scheduler import Scheduler
from bulkjobs.streams.snapshots import SnapshotRestorer, Snapshotter
from bulkjobs.streams.state import JobCommands, JobStates, ObjectState
from bulkjobs.streams.tracker import JobTracker
from bulkjobs.streams.uploads import UploadClock, UploadWatch
from bulkjobs.streams.webhooks import HttpPost, WebhookSender

log = logging.getLogger(__name__)

# Seconds between the looks at the jobs (definitions to fire, silent uploads, expired jobs): a
# one-second cron fires on time, and a look for expired jobs costs only the jobs due.
SCHEDULER_INTERVAL = 0.5
METRICS_INTERVAL = 1.0  # seconds between two updates of the gauges (consumer lag, index size)
SNAPSHOT_INTERVAL = 1.0  # seconds between two looks for a partition whose snapshot is due
# Seconds a rebalance waits, at most, for the snapshots of the partitions it takes away: a few
# hundred milliseconds per million ids; the group's members wait for the slowest to revoke.
HAND_OVER_SECONDS = 10.0
YOUNG_GC_THRESHOLD = 50_000  # net new containers before a young collection (see run_worker)


class Topics:
    """The worker's Faust topics, by name, and the three ways it sends to them."""

    def __init__(self, app: faust.App, names: TopicNames, partitions: int) -> None:
        self.names = names
        self.by_name = {name: app.topic(name, partitions=partitions, internal=False)
                        for name in (names.batches, names.changes, names.job_events, names.status,
                                     names.workers, names.dead_letters, names.snapshots, names.held)}

    async def publish(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                      partition: int | None = None) -> int:
        """Send and wait for the broker's ack, retrying: a batch must never be dropped (a value
        of None is a tombstone)."""
        delay = 0.2
        while True:
            try:
                fut = await self.by_name[topic].send(key=key, value=value, partition=partition, force=True)
                return (await fut).offset
            except Exception:
                log.exception("publishing to %s failed; retrying in %.1fs", topic, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                   partition: int | None = None) -> None:
        """Hand a value (None: a tombstone) to the producer, without waiting for the ack or retrying."""
        await self.by_name[topic].send(key=key, value=value, partition=partition)

    async def dead_letter(self, message: Message, reason: str) -> None:
        """Set a message aside with the reason it could not be handled; the stream goes on."""
        log.warning("dead letter from %s: %s", message, reason)
        metrics.dead_letter(message.topic)
        headers = [("reason", reason.encode()), ("topic", message.topic.encode()),
                   ("partition", str(message.partition).encode()), ("offset", str(message.offset).encode())]
        fut = await self.by_name[self.names.dead_letters].send(key=message.key, value=message.value,
                                                               headers=headers, force=True)
        await fut


def message_of(event: faust.EventT) -> Message:
    """What the orchestration needs of a Faust event."""
    return Message(topic=event.message.topic, partition=event.message.partition, offset=event.message.offset,
                   key=event.key, value=event.value)


def assigned_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker is assigned."""
    assignment = app.consumer.assignment() if app.consumer else set()
    return {tp.partition for tp in assignment if tp.topic == topic}


async def owned_and_known(app: faust.App, topic: str, job_states: JobStates,
                          start_tails: Callable[[], Awaitable[None]]) -> set[int]:
    """The job-events partitions this worker owns, each with its jobs known (even if no event of
    it has come since it was assigned)."""
    owned = assigned_partitions(app, topic)
    if owned:
        await start_tails()
        for partition in owned - job_states.synced:
            await job_states.sync(partition)
    return owned


def build_app(settings: Settings) -> faust.App:
    names = TopicNames(settings.topic_prefix)
    app = faust.App(
        names.worker_app_id,
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka_brokers.split(",")),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        **FAUST_PRODUCER,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=str(settings.data_dir / "worker"),
    )
    topics = Topics(app, names, settings.partitions)
    objects = ObjectState(partial(TailReader(settings.kafka_brokers, [names.changes]).tail, names.changes),
                          settings.partitions,
                          SnapshotRestorer(Refetcher(settings.kafka_brokers, names.snapshots)))
    # The statuses and the commands are read by one consumer: one fetch loop, not two.
    jobs_reader = TailReader(settings.kafka_brokers, (names.status, names.job_events))
    job_states = JobStates(partial(jobs_reader.tail, names.status))
    commands = JobCommands(partial(jobs_reader.tail, names.job_events))
    uploads = UploadClock(settings.upload_timeout)
    host = socket.gethostname()
    worker_id = f"{host}-{os.getpid()}"
    progress = metrics.AgentProgress()

    async def start_tails() -> None:
        await objects.tail.ensure_started(settings.partitions, lazy=True)
        await job_states.tail.ensure_started(settings.partitions)
        await commands.tail.ensure_started(settings.partitions, from_end=True)

    owned_job_partitions = partial(owned_and_known, app, names.job_events, job_states, start_tails)
    applier = BatchApplier(publish=topics.publish, dead_letter=topics.dead_letter, topics=names,
                           partitions=settings.partitions, objects=objects, job_states=job_states,
                           commands=commands, host=host)
    tracker = JobTracker(publish=topics.publish, send=topics.send, dead_letter=topics.dead_letter, topics=names,
                         settings=settings, job_states=job_states,
                         batches=Refetcher(settings.kafka_brokers, names.batches),
                         held=Refetcher(settings.kafka_brokers, names.held), uploads=uploads)
    schedules = Scheduler(publish=topics.publish, topics=names, job_states=job_states, owned=owned_job_partitions)
    snapshotter = Snapshotter(
        objects=objects, publish=topics.publish, topic=names.snapshots,
        finished=lambda job_id: job_states.get(job_id).terminal, running=job_states.running,
        every_changes=settings.snapshot_changes, every_seconds=settings.snapshot_seconds)
    snapshot_timer(app, names, snapshotter)
    watch = UploadWatch(publish=topics.publish, topics=names, job_states=job_states, clock=uploads,
                        owned=owned_job_partitions)
    expiry = Expiry(publish=topics.publish, topics=names, job_states=job_states, owned=owned_job_partitions,
                    retention=settings.job_retention)
    deliver_webhooks(app, settings, topics.publish, names, job_states, owned_job_partitions)

    @app.agent(topics.by_name[names.batches])
    async def apply_batches(stream: faust.StreamT) -> AsyncIterator[None]:
        await start_tails()
        async for event in stream.events():
            message = message_of(event)
            await applier.handle(message)
            progress.handled(message)
            yield None

    @app.agent(topics.by_name[names.job_events])
    async def track_jobs(stream: faust.StreamT) -> AsyncIterator[None]:
        await start_tails()
        async for event in stream.events():
            message = message_of(event)
            await tracker.handle(message)
            progress.handled(message)
            yield None

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        batch_partitions = {tp.partition for tp in revoked if tp.topic == names.batches}
        # Bounded: a hand-over cut short leaves the previous snapshot, and the next owner reads more.
        await never_raising("hand-over snapshot",
                            lambda: asyncio.wait_for(snapshotter.hand_over(batch_partitions), HAND_OVER_SECONDS))
        objects.revoke(batch_partitions)
        lost = {tp.partition for tp in revoked if tp.topic == names.job_events}
        job_states.revoke(lost)
        await job_states.read_again(lost)
        uploads.restart(lost, job_states.partitions)
        progress.revoke({(tp.topic, tp.partition) for tp in revoked})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        batch_partitions = {tp.partition for tp in assigned if tp.topic == names.batches}
        objects.assign(batch_partitions)
        objects.preload(batch_partitions, start_tails)

    @app.timer(SCHEDULER_INTERVAL)
    async def job_looks() -> None:
        for timer, look in (("scheduler", schedules.look), ("upload watch", watch.look), ("job expiry", expiry.look)):
            await never_raising(timer, look)

    @app.timer(settings.worker_heartbeat_seconds)
    async def heartbeat() -> None:
        owned = sorted(assigned_partitions(app, names.batches))
        if not owned:
            return
        await start_tails()
        beat = WorkerHeartbeat(worker=worker_id, host=host, pid=os.getpid(), at=utc_now(), partitions=owned)
        await topics.send(names.workers, encode(beat), key=worker_id.encode())

    if settings.metrics_port:
        @app.timer(METRICS_INTERVAL)
        async def gauges() -> None:
            if app.consumer is not None:
                await never_raising("metrics", partial(metrics.observe, app.consumer, (names.batches, names.job_events),
                                                       progress, objects.live_ids), METRICS_INTERVAL)

    return app


def deliver_webhooks(app: faust.App, settings: Settings, publish: Publish, names: TopicNames, job_states: JobStates,
                     owned: Owned) -> None:
    """A timer that delivers the due completion webhooks (``streams.webhooks``), and the close
    of its HTTP client when the worker stops."""
    post = HttpPost(settings.webhook_deny_private)
    sender = WebhookSender(publish=publish, topics=names, job_states=job_states, owned=owned, settings=settings,
                           post=post)

    @app.timer(SCHEDULER_INTERVAL)
    async def webhook_sender() -> None:
        await never_raising("webhook sender", sender.look)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_http(app: faust.App, **kwargs: Any) -> None:
        await post.close()


def snapshot_timer(app: faust.App, names: TopicNames, snapshots: Snapshotter) -> None:
    """Every ``SNAPSHOT_INTERVAL``, snapshot a partition of the batches this worker owns, if one is due."""

    @app.timer(SNAPSHOT_INTERVAL)
    async def snapshot() -> None:
        await never_raising("snapshotter", partial(snapshots.look, assigned_partitions(app, names.batches)),
                            SNAPSHOT_INTERVAL)


async def never_raising(timer: str, look: Callable[[], Awaitable[None]], interval: float = SCHEDULER_INTERVAL) -> None:
    """A timer's look: an error in it is logged, and the next tick looks again (a Faust timer
    that raises stops the worker)."""
    try:
        await look()
    except Exception:
        log.exception("the %s failed; it looks again in %.1f s", timer, interval)


async def group_members(settings: Settings, attempts: int = 10) -> int | None:
    """How many members the worker group's coordinator holds now (an empty or unknown group:
    0); None if the broker does not say."""
    group = TopicNames(settings.topic_prefix).worker_app_id
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
        try:
            await admin.start()
            [response] = await admin.describe_consumer_groups([group])
            [described] = response.to_object()["groups"]
            if described["error_code"] == 0:
                return len(described["members"])
            log.info("describing group %s: error %d", group, described["error_code"])
        except Exception as exc:  # e.g. no coordinator yet on a new Kafka cluster
            log.info("describing group %s failed (%r)", group, exc)
        finally:
            await admin.close()
        if attempt < attempts - 1:
            await asyncio.sleep(0.5)
    return None


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run the worker in the foreground until it is stopped.

    If its group has members, it first waits out their sessions: a worker that joins the group
    while a crashed member's session is still open on Tansu can be left with partitions it is
    never sent (seen in the crash test); once that session has expired, the join is clean. A
    group without members (a first start, or after the workers left it) is joined at once.
    """
    serve(metrics.REGISTRY, settings.host, settings.metrics_port, "worker")
    asyncio.run(ensure_topics(settings))
    members = asyncio.run(group_members(settings))
    if members == 0:
        log.info("the worker group has no members: joining it now")
    else:
        pause = 2 * settings.session_timeout + 1
        log.info("the worker group has %s member(s), maybe crashed: waiting %.1f s for their sessions to expire",
                 "unknown" if members is None else members, pause)
        time.sleep(pause)
    app = build_app(settings)
    # Faust sets logging up itself: handed the same configuration, it logs as the other parts do.
    # Quiet, it prints nothing beside the log (its banner, "-INT-" on Ctrl-C), which JSON needs.
    config = logging_config("worker", settings.log_format, loglevel.upper())
    # What is live now (modules, the app) lives as long as the process: left out of every
    # collection, so that the full collections the batches' objects cause scan only them.
    gc.freeze()
    # A batch adds several thousand containers that live until its AppliedBatch is acked: with
    # the default threshold (700) each batch's objects were scanned by a young collection while
    # still alive, and again as they aged (0.1 CPU-s per 300,000 records, about 0.4 us a record).
    # A young generation larger than the batches in flight is collected only for real garbage.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    faust.Worker(app, loglevel=loglevel, logging_config=config,
                 quiet=settings.log_format == "json").execute_from_commandline()
