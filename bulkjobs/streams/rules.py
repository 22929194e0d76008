"""The domain's job rules as the tracker meets them in messages: which rule each job event calls
(``next_job``), and a parked batch made ready to be applied again (``released``).

They live here, not in ``bulkjobs/domain/jobs.py``, because they read and write the message
classes of ``bulkjobs.kafka.topics``, and the domain imports nothing of the Kafka contract.
"""

from __future__ import annotations

from dataclasses import replace

from bulkjobs.domain import jobs, webhooks
from bulkjobs.domain.counts import Counts
from bulkjobs.kafka.topics import (
    BatchDone,
    CallbackAttempt,
    ExportDone,
    ExportProgress,
    JobCommand,
    JobEvent,
    JobRequest,
    JobSubmitted,
    RecordBatch,
    decode,
    encode,
)


def next_job(job: jobs.Job, event: JobEvent, at: str) -> jobs.Job | None:
    """The job after an event that needs no publishing of its own: every event but a part,
    a parked batch and a ``fire`` (which the tracker handles itself)."""
    if isinstance(event, JobCommand):
        return _commanded(job, event)
    if isinstance(event, JobRequest):
        requested = jobs.requested(job, tenant=event.tenant, type=event.type, action=event.action,
                                   description=event.description, parts=event.parts, created_at=at,
                                   dry_run=event.dry_run)
        if requested is None or event.callback_url is None:
            return requested
        return replace(requested, details=webhooks.with_callback(requested.details, event.callback_url))
    if isinstance(event, JobSubmitted):
        return jobs.submitted(
            job, tenant=event.tenant, type=event.type, action=event.action,
            description=event.description, total=event.total, batches=event.batches,
            created_at=event.created_at, details=event.details, parent_id=event.parent_id,
            schedule=event.schedule, suspended=event.suspended, uploading=event.uploading is True,
            retry_of=event.retry_of,
        )
    if isinstance(event, BatchDone):
        return jobs.batch_done(job, event.seq, Counts.from_dict(event.counts), event.at, event.host)
    if isinstance(event, ExportProgress):
        return jobs.export_progress(job, event.written, event.total, event.at)
    if isinstance(event, ExportDone):
        return jobs.export_done(job, event.total, event.files, event.at)
    if isinstance(event, CallbackAttempt):
        return webhooks.attempted(job, event.attempt, event.at, event.error, event.gave_up)
    raise TypeError(f"next_job cannot fold {type(event).__name__}")


def _commanded(job: jobs.Job, command: JobCommand) -> jobs.Job | None:
    if command.kind == "cancel":
        return jobs.cancelled(job, command.at)
    if command.kind == "suspend":
        return jobs.suspended(job, command.at)
    if command.kind == "resume":
        return jobs.resumed(job, command.at)
    if command.kind == "update":
        return jobs.updated(job, command.changes or {}, command.at)
    if command.kind == "delete_files":
        return jobs.files_deleted(job, (command.changes or {}).get("names", []), command.at)
    if command.kind == "fail":
        return jobs.failed(job, command.at, command.reason or "the job could not run")
    if command.kind == "sealed":
        return jobs.sealed(job)
    if command.kind == "delete":
        return jobs.deleted(job, command.at)
    raise TypeError(f"next_job cannot fold a {command.kind!r} command")


def released(payload: bytes, job_id: str) -> bytes:
    """A parked batch, to be applied now as a batch of ``job_id`` (itself, or a run of it)."""
    batch = RecordBatch(**decode(payload))
    return encode(replace(batch, job_id=job_id, hold=False))
