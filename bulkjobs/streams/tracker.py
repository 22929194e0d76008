"""The job tracker: folds each job event into its job's state and publishes the new ``JobStatus``.

It owns the job-events partitions it is assigned: before the first event of a partition it
waits until its ``JobStates`` holds the partition's jobs, then applies the job rules to each
event (``rules.next_job``), fails a job produced to Kafka whose tenant is at its cap of active
jobs, routes the parts of such a job into batches, keeps the
parked batches of a job that holds them and sends them on when it is resumed (``release``),
makes a definition's runs (``fire``), and judges interrupted uploads. The new state goes to the
same partition of the status topic, the jobs' changelog, followed by a tombstone (a null value)
once the job is deleted. A message it cannot read goes to the
dead letters and fails the job it names; an error handling an event fails its job; the stream
goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from bulkjobs.clock import utc_now
from bulkjobs.domain import jobs
from bulkjobs.kafka.batching import Batcher
from bulkjobs.kafka.topics import (
    BatchParked,
    JobCommand,
    JobRequest,
    JobSubmitted,
    RecordPart,
    TopicNames,
    encode,
    job_event_from,
    names_in,
    status_message,
)
from bulkjobs.logs import about_job
from bulkjobs.settings import Settings
from bulkjobs.streams.effects import DeadLetter, Message, Publish, Send, publish_job_event
from bulkjobs.streams.rules import next_job, released
from bulkjobs.streams.state import JobStates
from bulkjobs.streams.uploads import UploadClock

log = logging.getLogger(__name__)


class Refetch(Protocol):
    """Reads a batch back from where it lies in the batches topic (``kafka.refetch.Refetcher``)."""

    async def fetch(self, partition: int, offset: int) -> bytes: ...


class JobTracker:
    def __init__(self, *, publish: Publish, send: Send, dead_letter: DeadLetter, topics: TopicNames,
                 settings: Settings, job_states: JobStates, batches: Refetch, uploads: UploadClock,
                 now: Callable[[], str] = utc_now) -> None:
        self.publish, self.send, self.dead_letter, self.topics = publish, send, dead_letter, topics
        self.settings, self.job_states, self.batches, self.uploads = settings, job_states, batches, uploads
        self.now = now

    async def handle(self, message: Message) -> None:
        """Track one message of the job-events topic; an error fails the job it names."""
        await self.job_states.sync(message.partition)
        try:
            changed = await self.track(message)
        except Exception as exc:  # never stop the tracker: the job fails, the stream goes on
            job_id, tenant = names_in(message.key, message.value)
            log.exception("job event at %s could not be handled", message, extra=about_job(job_id, tenant))
            changed = self._failed_by_message(job_id, tenant, f"an event of the job could not be handled: {exc!r}")
        if changed is not None and changed.tenant:
            try:
                await self._publish_status(changed, message.partition)
            except Exception:  # a status not even a small copy of can be sent: told in the log
                log.exception("the status of job %s could not be published", changed.id,
                              extra=about_job(changed.id, changed.tenant))

    async def track(self, message: Message) -> jobs.Job | None:
        """The job as one job event leaves it (None: unchanged)."""
        try:
            event = job_event_from(message.key, message.value)
        except ValueError as exc:
            await self.dead_letter(message, str(exc))
            return self._refused(*names_in(message.key, message.value), str(exc))
        job = self.job_states.get(event.job_id)
        if isinstance(event, RecordPart):
            return await self._part(message, job, event)
        if isinstance(event, BatchParked):
            return await self._park(job, event)
        if isinstance(event, JobCommand) and event.kind in ("fire", "beat", "upload_timeout"):
            return await self._tracker_command(job, event)
        if isinstance(event, JobSubmitted) and event.uploading:
            self.uploads.heard(job.id)
        changed = next_job(job, event, self.now())
        if isinstance(event, JobRequest) and changed is not None:
            return self._capped(changed)
        if changed is not None:  # a resume (or an update that resumes) sends held batches on
            await self.release(jobs.released_batches(job, changed), job.id)
        return changed

    def _capped(self, requested: jobs.Job) -> jobs.Job:
        """A job produced to Kafka, failed (never dropped) if its tenant already has as many
        jobs queued or processing as it may; the API answers 429 at the same cap."""
        cap = self.settings.max_active_jobs
        if self.job_states.active(requested.tenant) < cap:
            return requested
        return jobs.failed(requested, self.now(), jobs.too_many_active(cap), jobs.TOO_MANY_ACTIVE_JOBS) or requested

    async def _tracker_command(self, job: jobs.Job, command: JobCommand) -> jobs.Job | None:
        """A command that the tracker carries out itself, beyond the job rules."""
        if command.kind == "fire":
            return await self.fire(job, command.due or command.at, self.now())
        if command.kind == "beat":
            self.uploads.heard(job.id)
            return None
        silent = self.uploads.silent_for(job.id)  # upload_timeout, judged again: a beat handled since wins
        return jobs.upload_interrupted(job, self.now(), silent) if silent is not None else None

    async def _part(self, message: Message, job: jobs.Job, part: RecordPart) -> jobs.Job | None:
        if jobs.wants_part(job, part.part):
            return await self._route(job, part)
        if job.parts is None or part.part >= job.parts:
            reason = f"part {part.part} of a job that did not request it"
            await self.dead_letter(message, reason)
            return self._refused(part.job_id, None, reason)
        return None  # a part routed before: a producer's retry

    async def _route(self, job: jobs.Job, part: RecordPart) -> jobs.Job:
        """Route a requested job's part into batches, publish them, and count it as routed."""
        out: list[tuple[int, bytes]] = []
        batcher = Batcher(job_id=job.id, tenant=job.tenant, record_type=job.type, action=job.action,
                          partitions=self.settings.partitions, batch_records=self.settings.batch_records,
                          batch_bytes=self.settings.batch_bytes, emit=lambda p, payload: out.append((p, payload)),
                          first_index=job.next_index, first_seq=job.next_seq, dry_run=job.dry_run)
        batcher.add(part.records, len(encode(part.records)))
        batcher.close()
        for partition, payload in out:
            await self.publish(self.topics.batches, payload, partition=partition)
        return jobs.part_routed(job, part.part, len(part.records), len(out), self.now())

    async def release(self, parked: list[list[int]], job_id: str) -> None:
        """Send held batches again, to be applied as batches of ``job_id``."""
        for partition, offset in parked:
            payload = await self.batches.fetch(partition, offset)
            await self.publish(self.topics.batches, released(payload, job_id), partition=partition)

    async def _park(self, job: jobs.Job, event: BatchParked) -> jobs.Job | None:
        """Keep where a held batch lies; if the job was resumed meanwhile, send it on at once."""
        if job.holds_batches:
            return jobs.parked(job, event.partition, event.offset)
        if not job.terminal:
            await self.release([[event.partition, event.offset]], job.id)
        return None

    async def fire(self, definition: jobs.Job, due: str, at: str) -> jobs.Job | None:
        """Make a definition's next run: a job of its own, with copies of the held batches."""
        changed = jobs.fired(definition, due, at)
        if changed is None:
            return None
        run_id = f"{definition.id}r{definition.runs_fired}"  # the same run if this fire is redelivered
        run = JobSubmitted(job_id=run_id, tenant=definition.tenant, type=definition.type,
                           action=definition.action, description=definition.description, total=definition.total,
                           batches=definition.batches or 0, created_at=at,
                           details={**(definition.details or {}), "scheduled_for": due}, parent_id=definition.id)
        await publish_job_event(self.publish, self.topics.job_events, run)
        await self.release(definition.parked, run_id)
        return changed

    def _refused(self, job_id: str | None, tenant: str | None, reason: str) -> jobs.Job | None:
        """The job a refused message names, failed with the reason (None if no job can be named)."""
        return self._failed_by_message(job_id, tenant, f"a message of the job was refused: {reason}")

    def _failed_by_message(self, job_id: str | None, tenant: str | None, reason: str) -> jobs.Job | None:
        """The job a message names (its key or ``job_id``), failed with the reason; None if no
        job can be named, or it had ended."""
        if job_id is None:
            return None
        job, at = self.job_states.get(job_id), self.now()
        if not job.tenant and tenant:  # a message so malformed that the job never began
            job = replace(job, tenant=tenant, created_at=at)
        return jobs.failed(job, at, reason)

    async def _publish_status(self, job: jobs.Job, partition: int) -> None:
        """Keep the job's new state and send it as its ``JobStatus`` (failed and made small if
        it is too large to send)."""
        job, value = status_message(job, self.now())
        self.job_states.put(job, partition)
        if not job.uploading or job.terminal:
            self.uploads.forget(job.id)
        await self.send(self.topics.status, value, key=job.id.encode(), partition=partition)
        if job.status == jobs.DELETED:  # a real tombstone after it: compaction may drop every status of the job
            await self.send(self.topics.status, None, key=job.id.encode(), partition=partition)
