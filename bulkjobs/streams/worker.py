"""The Faust worker app: built in one place from the settings, with its two agents.

``apply_batches`` owns partitions of the batches topic: it applies each batch against the
object index and publishes what it did (one ``AppliedBatch`` and one ``BatchDone`` per batch).
``track_jobs`` owns partitions of the job-events topic: it folds job events into each job's
state and publishes the new ``JobStatus`` to the same partition of the status topic, which is
the jobs' changelog (see ``state.JobStates`` and docs/architecture.md for why not a Faust table).
Two timers watch the jobs of the job-events partitions this worker owns: the scheduler fires
definitions, the upload watch fails jobs whose upload was interrupted. An error handling one
message or one job fails that job, with the reason; it never stops an agent or a timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

import faust
from faust.types import TP

from bulkjobs.clock import utc_now
from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.identity import RELATIONSHIPS
from bulkjobs.domain.records import apply_batch, fail_all, internal_error
from bulkjobs.domain.schedules import next_due
from bulkjobs.gcpause import gc_paused
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.batching import Batcher
from bulkjobs.kafka.clients import FAUST_PRODUCER
from bulkjobs.kafka.refetch import Refetcher
from bulkjobs.kafka.topics import (
    COMMAND_NOTICE,
    AppliedBatch,
    BatchDone,
    BatchParked,
    ExportDone,
    ExportProgress,
    JobCommand,
    JobEvent,
    JobRequest,
    JobSubmitted,
    RecordBatch,
    RecordPart,
    TopicNames,
    WorkerHeartbeat,
    decode,
    encode,
    job_event_from,
    names_in,
    status_message,
)
from bulkjobs.settings import Settings
from bulkjobs.streams.state import JobCommands, JobStates, ObjectState

log = logging.getLogger(__name__)

SCHEDULER_INTERVAL = 0.5  # seconds between looks at the definitions: a one-second cron fires on time


def next_job(job: jobs.Job, event: JobEvent, at: str) -> jobs.Job | None:
    """The job after an event that needs no publishing of its own: every event but a part,
    a parked batch and a ``fire`` (which the tracker handles itself)."""
    if isinstance(event, JobRequest):
        return jobs.requested(job, tenant=event.tenant, type=event.type, action=event.action,
                              description=event.description, parts=event.parts, created_at=at)
    if isinstance(event, JobSubmitted):
        return jobs.submitted(
            job, tenant=event.tenant, type=event.type, action=event.action,
            description=event.description, total=event.total, batches=event.batches,
            created_at=event.created_at, details=event.details, parent_id=event.parent_id,
            schedule=event.schedule, suspended=event.suspended, uploading=event.uploading is True,
        )
    if isinstance(event, BatchDone):
        return jobs.batch_done(job, event.seq, Counts.from_dict(event.counts), event.at, event.host)
    if isinstance(event, ExportProgress):
        return jobs.export_progress(job, event.written, event.total, event.at)
    if isinstance(event, ExportDone):
        return jobs.export_done(job, event.total, event.files, event.at)
    if not isinstance(event, JobCommand):
        raise TypeError(f"next_job cannot fold {type(event).__name__}")
    if event.kind == "cancel":
        return jobs.cancelled(job, event.at)
    if event.kind == "suspend":
        return jobs.suspended(job, event.at)
    if event.kind == "resume":
        return jobs.resumed(job, event.at)
    if event.kind == "update":
        return jobs.updated(job, event.changes or {}, event.at)
    if event.kind == "delete_files":
        return jobs.files_deleted(job, (event.changes or {}).get("names", []), event.at)
    if event.kind == "fail":
        return jobs.failed(job, event.at, event.reason or "the job could not run")
    if event.kind == "sealed":
        return jobs.sealed(job)
    if event.kind == "delete":
        return jobs.deleted(job, event.at)
    raise TypeError(f"next_job cannot fold a {event.kind!r} command")


def released(payload: bytes, job_id: str) -> bytes:
    """A parked batch, to be applied now as a batch of ``job_id`` (itself, or a run of it)."""
    batch = RecordBatch(**decode(payload))
    return encode(replace(batch, job_id=job_id, hold=False))


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
    batches_topic = app.topic(names.batches, partitions=settings.partitions, internal=False)
    changes_topic = app.topic(names.changes, partitions=settings.partitions, internal=False)
    job_events_topic = app.topic(names.job_events, partitions=settings.partitions, internal=False)
    status_topic = app.topic(names.status, partitions=settings.partitions, internal=False)
    workers_topic = app.topic(names.workers, partitions=settings.partitions, internal=False)
    dead_letters_topic = app.topic(names.dead_letters, partitions=settings.partitions, internal=False)
    objects = ObjectState(settings.kafka_brokers, names.changes)
    job_states = JobStates(settings.kafka_brokers, names.status)
    commands = JobCommands(settings.kafka_brokers, names.job_events)
    batches_back = Refetcher(settings.kafka_brokers, names.batches)
    fires_sent: dict[str, str] = {}  # definition -> the due time of the last fire command sent
    fails_sent: set[str] = set()  # definitions whose schedule failed, and the fail command is sent
    # Uploading job -> when (time.monotonic) the tracker last handled a sign of life from its
    # submitter (its JobSubmitted or a beat). Kept in memory: a new owner starts each job's clock
    # when it first sees the job, so it waits a whole timeout before it judges.
    beats: dict[str, float] = {}
    timeouts_sent: dict[str, float] = {}  # job -> the beat time its last upload_timeout was sent for
    host = socket.gethostname()
    worker_id = f"{host}-{os.getpid()}"

    async def start_tails() -> None:
        await objects.tail.ensure_started(settings.partitions, lazy=True)
        await job_states.tail.ensure_started(settings.partitions)
        await commands.tail.ensure_started(settings.partitions, from_end=True)

    async def publish(topic: faust.TopicT, value: bytes, *, key: bytes | None = None,
                      partition: int | None = None) -> Any:
        """Send and wait for the broker's ack, retrying: a batch must never be dropped."""
        delay = 0.2
        while True:
            try:
                fut = await topic.send(key=key, value=value, partition=partition, force=True)
                return await fut
            except Exception:
                log.exception("publishing to %s failed; retrying in %.1fs", topic, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def dead_letter(event: faust.EventT, reason: str) -> None:
        """Set a message aside with the reason it could not be handled; the stream goes on."""
        message = event.message
        log.warning("dead letter from %s@%d: %s", message.tp, message.offset, reason)
        headers = [("reason", reason.encode()), ("topic", message.topic.encode()),
                   ("partition", str(message.partition).encode()), ("offset", str(message.offset).encode())]
        fut = await dead_letters_topic.send(key=event.key, value=event.value, headers=headers, force=True)
        await fut

    async def request_fail(job_id: str, tenant: str, reason: str) -> None:
        """Ask the job's tracker to fail it (from outside the tracker: its events stay in order)."""
        command = JobCommand(job_id=job_id, tenant=tenant, kind="fail", at=utc_now(), reason=reason)
        await publish(job_events_topic, encode(command), key=job_id.encode())

    def refused(job_id: str | None, tenant: str | None, reason: str) -> jobs.Job | None:
        """The job a refused message names, failed with the reason (None if no job can be named)."""
        return failed_by_message(job_id, tenant, f"a message of the job was refused: {reason}")

    def failed_by_message(job_id: str | None, tenant: str | None, reason: str) -> jobs.Job | None:
        """The job a message names (its key or ``job_id``), failed with the reason; None if no
        job can be named, or it had ended."""
        if job_id is None:
            return None
        job, at = job_states.get(job_id), utc_now()
        if not job.tenant and tenant:  # a message so malformed that the job never began
            job = replace(job, tenant=tenant, created_at=at)
        return jobs.failed(job, at, reason)

    async def route_part(job: jobs.Job, part: RecordPart) -> jobs.Job:
        """Route a requested job's part into batches, publish them, and count it as routed."""
        out: list[tuple[int, bytes]] = []
        batcher = Batcher(job_id=job.id, tenant=job.tenant, kind=job.type, action=job.action,
                          partitions=settings.partitions, batch_records=settings.batch_records,
                          batch_bytes=settings.batch_bytes, emit=lambda p, payload: out.append((p, payload)),
                          first_index=job.next_index, first_seq=job.next_seq)
        batcher.add(part.records, len(encode(part.records)))
        batcher.close()
        for partition, payload in out:
            await publish(batches_topic, payload, partition=partition)
        return jobs.part_routed(job, part.part, len(part.records), len(out), utc_now())

    async def release(parked: list[list[int]], job_id: str) -> None:
        """Send held batches again, to be applied as batches of ``job_id``."""
        for partition, offset in parked:
            payload = await batches_back.fetch(partition, offset)
            await publish(batches_topic, released(payload, job_id), partition=partition)

    async def park(job: jobs.Job, event: BatchParked) -> jobs.Job | None:
        """Keep where a held batch lies; if the job was resumed meanwhile, send it on at once."""
        if job.holds_batches:
            return jobs.parked(job, event.partition, event.offset)
        if not job.terminal:
            await release([[event.partition, event.offset]], job.id)
        return None

    async def fire(definition: jobs.Job, due: str, at: str) -> jobs.Job | None:
        """Make a definition's next run: a job of its own, with copies of the held batches."""
        changed = jobs.fired(definition, due, at)
        if changed is None:
            return None
        run_id = f"{definition.id}r{definition.runs_fired}"  # the same run if this fire is redelivered
        run = JobSubmitted(job_id=run_id, tenant=definition.tenant, type=definition.type,
                           action=definition.action, description=definition.description, total=definition.total,
                           batches=definition.batches or 0, created_at=at,
                           details={**(definition.details or {}), "scheduled_for": due}, parent_id=definition.id)
        await publish(job_events_topic, encode(run), key=run_id.encode())
        await release(definition.parked, run_id)
        return changed

    async def batch_done(job_id: str, seq: int, counts: Counts) -> None:
        done = BatchDone(job_id=job_id, seq=seq, counts=counts.to_dict(), at=utc_now(), host=host)
        await publish(job_events_topic, encode(done), key=job_id.encode())

    async def apply(partition: int, offset: int, batch: RecordBatch) -> None:
        await objects.sync(partition)
        already = objects.applied.get((batch.job_id, batch.seq))
        if already is not None:  # redelivered after a crash: its effects are in Kafka already
            await batch_done(batch.job_id, batch.seq, already)
            return
        await job_states.read_all(settings.partitions)  # jobs stopped before the worker started
        await commands.tail.fresh(COMMAND_NOTICE)  # a cancel or suspend answered by the API is known
        if batch.job_id in job_states.stopped or batch.job_id in commands.stopped:
            return
        if batch.hold or job_states.get(batch.job_id).holds_batches or batch.job_id in commands.held:
            held = BatchParked(job_id=batch.job_id, seq=batch.seq, partition=partition, offset=offset)
            await publish(job_events_topic, encode(held), key=batch.job_id.encode())
            return
        if batch.type == RELATIONSHIPS and batch.action == "post":
            await objects.sync_all(settings.partitions)  # sources and targets live anywhere
        at = utc_now()
        try:
            with gc_paused():
                outcome = apply_batch(batch.type, batch.action, batch.tenant, batch.items, objects.index, at)
        except Exception as exc:
            log.exception("batch %s/%d could not be applied", batch.job_id, batch.seq)
            outcome = fail_all(batch.items, internal_error(f"batch could not be applied: {exc!r}"))
        applied = AppliedBatch(
            job_id=batch.job_id, tenant=batch.tenant, seq=batch.seq, at=at,
            counts=outcome.counts.to_dict(), results=outcome.results, ops=outcome.ops, host=host,
        )
        metadata = await publish(changes_topic, encode(applied), partition=partition)
        objects.record(partition, metadata.offset, applied, apply_ops=False)
        await batch_done(batch.job_id, batch.seq, outcome.counts)

    async def handle_batch(event: faust.EventT) -> None:
        try:
            batch = RecordBatch(**decode(event.value))
        except Exception as exc:
            await dead_letter(event, f"unreadable record batch: {exc!r}")
            job_id, _ = names_in(None, event.value)
            if job_id is not None:
                await request_fail(job_id, "", f"a batch of the job could not be read: {exc!r}")
            return
        await apply(event.message.partition, event.message.offset, batch)

    @app.agent(batches_topic)
    async def apply_batches(stream: faust.StreamT) -> AsyncIterator[None]:
        await start_tails()
        async for event in stream.events():
            try:
                await handle_batch(event)
            except Exception as exc:  # the stream goes on: the batch's job fails with the reason
                log.exception("the batch at %s@%d could not be handled", event.message.tp, event.message.offset)
                job_id, tenant = names_in(None, event.value)
                if job_id is not None:
                    await request_fail(job_id, tenant or "", f"a batch of the job could not be applied: {exc!r}")
            yield None

    def upload_expired(job_id: str) -> float | None:
        """How long the job's submitter has been silent, if longer than the upload timeout."""
        silent = time.monotonic() - beats.setdefault(job_id, time.monotonic())
        return silent if silent > settings.upload_timeout else None

    async def track(event: faust.EventT) -> jobs.Job | None:
        """The job as one job event leaves it (None: unchanged)."""
        try:
            job_event = job_event_from(event.key, event.value)
        except ValueError as exc:
            await dead_letter(event, str(exc))
            return refused(*names_in(event.key, event.value), str(exc))
        job = job_states.get(job_event.job_id)
        command = job_event.kind if isinstance(job_event, JobCommand) else None
        if isinstance(job_event, RecordPart):
            if jobs.wants_part(job, job_event.part):
                return await route_part(job, job_event)
            if job.parts is None or job_event.part >= job.parts:
                reason = f"part {job_event.part} of a job that did not request it"
                await dead_letter(event, reason)
                return refused(job_event.job_id, None, reason)
            return None  # a part routed before: a producer's retry
        if isinstance(job_event, BatchParked):
            return await park(job, job_event)
        if command == "fire":
            return await fire(job, job_event.due or job_event.at, utc_now())
        if command == "beat":
            beats[job.id] = time.monotonic()
            return None
        if command == "upload_timeout":  # judged again here: a beat handled since it was sent wins
            silent = upload_expired(job.id)
            return jobs.upload_interrupted(job, utc_now(), silent) if silent is not None else None
        if isinstance(job_event, JobSubmitted) and job_event.uploading:
            beats[job.id] = time.monotonic()
        changed = next_job(job, job_event, utc_now())
        if changed is not None:  # a resume (or an update that resumes) sends held batches on
            await release(jobs.released_batches(job, changed), job.id)
        return changed

    @app.agent(job_events_topic)
    async def track_jobs(stream: faust.StreamT) -> AsyncIterator[None]:
        await start_tails()
        async for event in stream.events():
            partition = event.message.partition
            await job_states.sync(partition)
            try:
                changed = await track(event)
            except Exception as exc:  # never stop the tracker: the job fails, the stream goes on
                log.exception("job event at %s@%d could not be handled", event.message.tp, event.message.offset)
                changed = failed_by_message(*names_in(event.key, event.value),
                                            f"an event of the job could not be handled: {exc!r}")
            if changed is not None and changed.tenant:
                try:
                    await publish_status(changed, partition)
                except Exception:  # a status not even a small copy of can be sent: told in the log
                    log.exception("the status of job %s could not be published", changed.id)
            yield None

    async def publish_status(job: jobs.Job, partition: int) -> None:
        """Keep the job's new state and send it as its ``JobStatus`` (failed and made small if
        it is too large to send)."""
        job, value = status_message(job, utc_now())
        job_states.put(job, partition)
        if not job.uploading or job.terminal:
            beats.pop(job.id, None)
            timeouts_sent.pop(job.id, None)
        await status_topic.send(key=job.id.encode(), value=value, partition=partition)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        objects.revoke({tp.partition for tp in revoked if tp.topic == names.batches})
        lost = {tp.partition for tp in revoked if tp.topic == names.job_events}
        job_states.revoke(lost)
        for job_id in [job_id for job_id in beats if job_states.partitions.get(job_id) in lost]:
            del beats[job_id]  # if the partition comes back, its uploads' clocks start again

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        objects.assign({tp.partition for tp in assigned if tp.topic == names.batches})

    async def owned_job_partitions() -> set[int]:
        """The job-events partitions this worker owns, each with its jobs known (even if no
        event of it has come since it was assigned)."""
        assignment = app.consumer.assignment() if app.consumer else set()
        owned = {tp.partition for tp in assignment if tp.topic == names.job_events}
        if owned:
            await start_tails()
            for partition in owned - job_states.synced:
                await job_states.sync(partition)
        return owned

    @app.timer(SCHEDULER_INTERVAL)
    async def scheduler() -> None:
        await never_raising("scheduler", fire_due_definitions)

    @app.timer(SCHEDULER_INTERVAL)
    async def upload_watch() -> None:
        await never_raising("upload watch", fail_silent_uploads)

    async def never_raising(timer: str, look: Callable[[], Awaitable[None]]) -> None:
        """A timer's look: an error in it is logged, and the next tick looks again (a Faust
        timer that raises stops the worker)."""
        try:
            await look()
        except Exception:
            log.exception("the %s failed; it looks again in %.1f s", timer, SCHEDULER_INTERVAL)

    async def fire_due_definitions() -> None:
        """Fire the definitions of the job-events partitions this worker owns when they are due.
        A definition whose schedule cannot be computed is failed with the reason (once); the
        other definitions, and the worker, go on."""
        owned = await owned_job_partitions()
        now = datetime.now(timezone.utc)
        for job in job_states.definitions():
            if job_states.partitions.get(job.id) not in owned or len(job.parked) < (job.batches or 0):
                continue  # another worker's, or its batches are not all held yet
            try:
                due = next_due(job.schedule or {}, created_at=job.created_at or utc_now(), last_due=job.last_due,
                               runs_fired=job.runs_fired, now=now)
            except Exception as exc:
                if job.id not in fails_sent:
                    fails_sent.add(job.id)
                    log.warning("definition %s: its schedule cannot run (%r); failing it", job.id, exc)
                    await request_fail(job.id, job.tenant, f"the job's schedule cannot run: {exc!r}")
                continue
            if due is None or fires_sent.get(job.id) == due:
                continue
            fires_sent[job.id] = due
            command = JobCommand(job_id=job.id, tenant=job.tenant, kind="fire", at=utc_now(), due=due)
            await publish(job_events_topic, encode(command), key=job.id.encode())

    async def fail_silent_uploads() -> None:
        """Ask the tracker to fail the uploading jobs of the partitions this worker owns whose
        submitter has been silent for longer than the upload timeout. The tracker judges again
        when the command comes in order after every beat sent before it, so a tracker that lags
        behind its partition never fails a job whose beats are still waiting to be read."""
        owned = await owned_job_partitions()
        for job in job_states.uploads():
            if job_states.partitions.get(job.id) not in owned or upload_expired(job.id) is None:
                continue
            if timeouts_sent.get(job.id) == beats[job.id]:
                continue  # sent for this silence already
            timeouts_sent[job.id] = beats[job.id]
            command = JobCommand(job_id=job.id, tenant=job.tenant, kind="upload_timeout", at=utc_now())
            await publish(job_events_topic, encode(command), key=job.id.encode())

    @app.timer(settings.worker_heartbeat_seconds)
    async def heartbeat() -> None:
        assignment = app.consumer.assignment() if app.consumer else set()
        owned = sorted(tp.partition for tp in assignment if tp.topic == names.batches)
        if not owned:
            return
        await start_tails()
        beat = WorkerHeartbeat(worker=worker_id, host=host, pid=os.getpid(),
                               at=utc_now(), partitions=owned)
        await workers_topic.send(key=worker_id.encode(), value=encode(beat))

    return app


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run the worker in the foreground until it is stopped.

    It first waits out the session of a member it may replace: a worker that joins the group
    while a crashed member's session is still open on Tansu can be left with partitions it is
    never sent (seen in the crash test); once that session has expired, the join is clean.
    """
    asyncio.run(ensure_topics(settings))
    pause = 2 * settings.session_timeout + 1
    log.info("waiting %.1f s for the sessions of crashed workers to expire", pause)
    time.sleep(pause)
    app = build_app(settings)
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
