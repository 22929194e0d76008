"""Every topic, key and message schema of bulkjobs. Nothing else spells a topic name.

All values are JSON (orjson) objects; keys are UTF-8 job ids where a topic is keyed.
``docs/topics.md`` documents the same for producers and consumers outside this code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import Job


@dataclass(frozen=True)
class TopicNames:
    prefix: str = "bulkjobs"

    @property
    def job_events(self) -> str:
        return f"{self.prefix}-job-events"

    @property
    def batches(self) -> str:
        return f"{self.prefix}-batches"

    @property
    def changes(self) -> str:
        return f"{self.prefix}-changes"

    @property
    def status(self) -> str:
        return f"{self.prefix}-status"

    @property
    def workers(self) -> str:
        return f"{self.prefix}-workers"

    @property
    def worker_app_id(self) -> str:
        """The worker's Faust app id: its consumer group and the prefix of its changelog topics."""
        return f"{self.prefix}-worker"

    @property
    def store_group(self) -> str:
        return f"{self.prefix}-store"


def encode(message: Any) -> bytes:
    """A message (dataclass) or plain value as JSON; orjson writes dataclasses natively."""
    return orjson.dumps(message)


def decode(value: bytes) -> Any:
    return orjson.loads(value)


# --- job-events: key = job id, partitioned by key (Kafka's default partitioner). -------------


@dataclass(frozen=True)
class JobSubmitted:
    """A job request is complete in Kafka: its totals. Producer: the API, before its batches.
    Consumer: the worker's job tracker (``track_jobs``)."""

    job_id: str
    tenant: str
    type: str
    action: str
    description: str | None
    total: int
    batches: int
    created_at: str
    details: dict[str, Any] | None = None  # a CSV job's job type, operation, mapping and file
    kind: str = "submitted"


@dataclass(frozen=True)
class BatchDone:
    """One batch of a job was applied, with its count delta. Producer: the batch applier, after
    the batch's ``AppliedBatch`` is in Kafka (again on redelivery). Consumer: the job tracker."""

    job_id: str
    seq: int
    counts: dict[str, int]
    at: str
    host: str | None = None  # the worker's host name
    kind: str = "batch_done"


@dataclass(frozen=True)
class JobCommand:
    """``cancel``, ``delete`` or ``fail`` (with a reason: the job could not run) a job.
    Producer: the API. Consumer: the job tracker."""

    job_id: str
    tenant: str
    kind: str
    at: str
    reason: str | None = None


def job_event_from(value: bytes) -> JobSubmitted | BatchDone | JobCommand:
    data = decode(value)
    kind = data.get("kind")
    if kind == "submitted":
        return JobSubmitted(**data)
    if kind == "batch_done":
        return BatchDone(**data)
    if kind in ("cancel", "delete", "fail"):
        return JobCommand(**data)
    raise ValueError(f"unknown job event kind {kind!r}")


# --- batches: no key; the producer picks the partition that owns the batch's records. --------


@dataclass(frozen=True)
class RecordBatch:
    """Up to ``batch_records`` records of one job, all owned by this partition.
    ``items`` are ``[index, fresh_id | null, record]`` or ``[index, null, null, reason]`` for a
    record refused on arrival. Producer: the API (routing with ``domain.identity.route``). Consumer: the batch applier (``apply_batches``)."""

    job_id: str
    tenant: str
    type: str
    action: str
    seq: int
    items: list[list[Any]] = field(default_factory=list)


# --- changes: no key; same partition number as the batch it came from. -----------------------


@dataclass(frozen=True)
class AppliedBatch:
    """What applying one batch did: per-record results, ops on objects and relationships, and
    the count delta. Producer: the batch applier. Consumers: the store (SQLite view) and every
    worker's object index (rebuilt from it on start and on partition assignment)."""

    job_id: str
    tenant: str
    seq: int
    at: str
    counts: dict[str, int]
    results: list[list[Any]]
    ops: list[list[Any]]
    host: str | None = None  # the worker's host name

    @property
    def count_delta(self) -> Counts:
        return Counts.from_dict(self.counts)


# --- status: key = job id. -------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    """A job's full state after a change (a snapshot, so the latest one wins), on the same
    partition number as the job's events. Producer: the job tracker. Consumers: the store,
    every worker (the tracker rebuilds its jobs from it; the applier stops cancelled jobs),
    outside users. ``batches`` and ``done`` (a hex bit set of counted batches) are the
    tracker's bookkeeping."""

    id: str
    tenant: str
    type: str
    action: str
    description: str | None
    status: str
    total: int | None
    counts: dict[str, int]
    progress: int
    error: dict[str, str] | None
    details: dict[str, Any] | None
    host: str | None
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    updated_at: str | None
    batches: int | None
    done: str


def status_of(job: Job) -> JobStatus:
    data = job.to_dict()
    return JobStatus(**data, progress=job.progress)


def job_from_status(status: dict[str, Any]) -> Job:
    data = dict(status)
    data.pop("progress", None)
    return Job.from_dict(data)


# --- workers: key = worker id. ----------------------------------------------------------------


@dataclass(frozen=True)
class WorkerHeartbeat:
    """A worker is up and holds partitions. Producer: each worker every few seconds.
    Consumer: the store (``GET /v1/health`` reads it)."""

    worker: str
    host: str
    pid: int
    at: str
    partitions: list[int]
