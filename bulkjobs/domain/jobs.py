"""The job state machine: what each job event does to a job's status, counts and timestamps.

Events arrive at least once; a batch is counted once because its sequence number is kept in
``done`` (a bit set), so a redelivered batch changes nothing. A job produced straight to Kafka
arrives as a request and parts; the parts routed so far are kept in ``parts_done`` the same way,
with where the next part's records and batches start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bulkjobs.domain.counts import Counts, progress

QUEUED = "queued"
PROCESSING = "processing"
SUCCEEDED = "succeeded"
PARTIALLY_SUCCEEDED = "partially_succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
DELETED = "deleted"  # a tombstone: the job is gone from every view

STATUSES = (QUEUED, PROCESSING, SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, DELETED})


@dataclass(frozen=True)
class Job:
    id: str
    tenant: str = ""
    type: str = ""
    action: str = ""
    description: str | None = None
    total: int | None = None
    batches: int | None = None
    done: int = 0  # bit i set: batch i has been counted
    counts: Counts = field(default_factory=Counts)
    status: str = QUEUED
    error: dict[str, str] | None = None
    details: dict[str, Any] | None = None  # what the API knows of the source (a CSV job's file, mapping)
    host: str | None = None  # the host of the worker that applied the job's first batch
    parts: int | None = None  # a job produced to Kafka: how many parts it announced
    parts_done: int = 0  # bit i set: part i has been routed into batches
    next_index: int = 0  # the index of the next part's first record
    next_seq: int = 0  # the seq of the next part's first batch
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    updated_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def progress(self) -> int:
        return progress(self.counts.processed, self.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "type": self.type,
            "action": self.action,
            "description": self.description,
            "total": self.total,
            "batches": self.batches,
            "done": format(self.done, "x"),
            "counts": self.counts.to_dict(),
            "status": self.status,
            "error": self.error,
            "details": self.details,
            "host": self.host,
            "parts": self.parts,
            "parts_done": format(self.parts_done, "x"),
            "next_index": self.next_index,
            "next_seq": self.next_seq,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        values = dict(data)
        values["done"] = int(values.get("done") or "0", 16)
        values["parts_done"] = int(values.get("parts_done") or "0", 16)
        values["counts"] = Counts.from_dict(values.get("counts") or {})
        return cls(**values)


def public_body(job: Job, status: str | None = None) -> dict[str, Any]:
    """The job as clients see it (HTTP, websocket): ``status`` overrides the job's own (see
    ``visible_status``); a CSV job's details (job type, operation, file...) sit at the top."""
    return {
        "id": job.id,
        "status": status or job.status,
        "type": job.type,
        "action": job.action,
        "description": job.description,
        "job_type": None,
        **(job.details or {}),
        "counts": {"total": job.total, **job.counts.to_dict()},
        "progress": job.progress,
        "error": job.error,
        "host": job.host,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "updated_at": job.updated_at,
    }


def submitted(job: Job, *, tenant: str, type: str, action: str, description: str | None,
              total: int, batches: int, created_at: str, details: dict[str, Any] | None = None) -> Job:
    """The request is in Kafka: the job learns its totals (its batches may already be counted)."""
    if job.status == DELETED:
        return job
    latest = max(created_at, job.updated_at or created_at)  # batches may have been counted first
    job = replace(job, tenant=tenant, type=type, action=action, description=description, details=details,
                  total=total, batches=batches, created_at=created_at, updated_at=latest)
    return _finish_if_done(job, latest)


def requested(job: Job, *, tenant: str, type: str, action: str, description: str | None, parts: int,
              created_at: str) -> Job | None:
    """A job produced to Kafka announced itself; None when its id is already taken (a retry)."""
    if job.tenant or job.status != QUEUED:
        return None
    return replace(job, tenant=tenant, type=type, action=action, description=description, parts=parts,
                   created_at=created_at, updated_at=created_at)


def wants_part(job: Job, part: int) -> bool:
    """Whether part ``part`` of a requested job is still to be routed."""
    return job.parts is not None and part < job.parts and not job.parts_done & (1 << part) and not job.terminal


def part_routed(job: Job, part: int, records: int, batches: int, at: str) -> Job:
    """Part ``part`` became ``batches`` batches of ``records`` records; after the last part the
    job knows its totals, as ``submitted`` tells an HTTP job's."""
    job = replace(job, parts_done=job.parts_done | (1 << part), next_index=job.next_index + records,
                  next_seq=job.next_seq + batches, updated_at=at)
    if job.parts_done.bit_count() < (job.parts or 0):
        return job
    if job.next_index == 0:
        return replace(job, total=0, batches=0, status=FAILED, completed_at=at,
                       error={"code": "job_failed", "message": "the job's parts hold no records"})
    return _finish_if_done(replace(job, total=job.next_index, batches=job.next_seq), at)


def batch_done(job: Job, seq: int, counts: Counts, at: str, host: str | None = None) -> Job | None:
    """Count one applied batch (applied on ``host``); None when it was counted before or the job is gone."""
    bit = 1 << seq
    if job.done & bit or job.status == DELETED:
        return None
    status = PROCESSING if job.status == QUEUED else job.status
    job = replace(job, done=job.done | bit, counts=job.counts + counts, status=status,
                  started_at=job.started_at or at, host=job.host or host, updated_at=at)
    return _finish_if_done(job, at)


def cancelled(job: Job, at: str) -> Job | None:
    """Stop a running job for good; None when it had already ended."""
    if job.terminal:
        return None
    return replace(job, status=CANCELLED, completed_at=at, updated_at=at)


def failed(job: Job, at: str, reason: str) -> Job | None:
    """The job itself could not run (its request never fully reached Kafka); None if it had ended."""
    if job.terminal:
        return None
    return replace(job, status=FAILED, error={"code": "job_failed", "message": reason}, completed_at=at, updated_at=at)


def deleted(job: Job, at: str) -> Job | None:
    """Remove a finished job; None when it is still running (or already gone)."""
    if not job.terminal or job.status == DELETED:
        return None
    return replace(job, status=DELETED, updated_at=at)


def _finish_if_done(job: Job, at: str) -> Job:
    if job.terminal or job.batches is None or job.done.bit_count() < job.batches:
        return job
    not_written = job.counts.not_written
    if not_written == 0:
        status, error = SUCCEEDED, None
    elif not_written < (job.total or 0):
        status, error = PARTIALLY_SUCCEEDED, None
    else:
        status = FAILED
        error = {"code": "all_records_failed", "message": f"all {not_written} records failed; see the results"}
    return replace(job, status=status, error=error, completed_at=at, updated_at=at)


def visible_status(status: str, processed: int, results_stored: int) -> str:
    """A job shows as finished only once the view holds all its results."""
    if status in TERMINAL and status != CANCELLED and results_stored < processed:
        return PROCESSING
    return status
