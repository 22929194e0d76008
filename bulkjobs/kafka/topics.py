"""Every topic, key and message schema of bulkjobs. Nothing else spells a topic name.

All values are JSON (orjson) objects; keys are UTF-8 job ids where a topic is keyed.
``docs/topics.md`` documents the same for producers and consumers outside this code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bulkjobs.domain import jobs
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.identity import ACTIONS, JOB_ID_RULE, is_job_id
from bulkjobs.domain.jobs import Job
from bulkjobs.domain.webhooks import check_callback_url
from bulkjobs.errors import BadRequest

# Every producer's request limit (the API's aiokafka producer and the worker's Faust producer
# both use it), and the largest value a message may have under it: the rest is left for the
# key (a job id), headers and the record batch's framing.
MAX_REQUEST_BYTES = 1_000_000
MAX_VALUE_BYTES = MAX_REQUEST_BYTES - 4096


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
    def dead_letters(self) -> str:
        return f"{self.prefix}-dead-letters"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}-snapshots"

    @property
    def held(self) -> str:
        return f"{self.prefix}-held"

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
    total: int | None  # None for an export: it learns its total when it runs
    batches: int
    created_at: str
    details: dict[str, Any] | None = None  # a CSV job's job type, operation, mapping and file; an export's
    parent_id: str | None = None  # a run of a scheduled definition
    schedule: dict[str, Any] | None = None  # a definition: its batches are held for its runs
    suspended: bool = False  # submitted suspended: its batches are held until it is resumed
    uploading: bool = False  # its batches follow, with ``beat`` commands, until a ``sealed`` command
    retry_of: str | None = None  # a retry: the job whose failed (and skipped) records it holds
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


COMMANDS = ("cancel", "delete", "fail", "suspend", "resume", "update", "fire", "delete_files",
            "beat", "sealed", "upload_timeout")
# Before it applies a batch, a batch applier knows every command written to the job-events
# topic more than this many seconds ago; the API answers a cancel or a suspend no sooner than
# this after writing it, so no batch of the job starts being applied after the answer.
COMMAND_NOTICE = 0.3


@dataclass(frozen=True)
class JobCommand:
    """A command to a job: ``cancel``, ``delete``, ``suspend``, ``resume``, ``update`` (with
    ``changes``), ``fail`` (with a reason: the job could not run) or ``fire`` (a definition's
    schedule time ``due`` has come). While the API sends an ``uploading`` job's batches it sends
    ``beat`` every few seconds, then ``sealed`` once the broker has them all; the upload watch
    sends ``upload_timeout`` for a job it has heard nothing of for too long. Producers: the API;
    the batch applier (``fail``); the scheduler (``fire``, ``fail``); the upload watch
    (``upload_timeout``). Consumer: the job tracker."""

    job_id: str
    tenant: str
    kind: str
    at: str
    reason: str | None = None
    changes: dict[str, Any] | None = None
    due: str | None = None


@dataclass(frozen=True)
class BatchParked:
    """A batch of a job that holds its batches (suspended, or a definition) was not applied:
    it lies at ``offset`` of ``partition`` of the batches topic (``origin`` None: parked by a
    version before the held topic), or its copy does, in the held topic, keyed ``held_key``,
    while the batch itself lay at ``origin`` of the batches topic. Producer: the batch applier.
    Consumer: the job tracker, which sends it again on resume (or copies it into each run)."""

    job_id: str
    seq: int
    partition: int
    offset: int
    origin: int | None = None
    kind: str = "batch_parked"


def held_key(job_id: str, seq: int, origin: int) -> bytes:
    """The key of the held topic's copy of batch ``seq`` of ``job_id``, which lay at offset
    ``origin`` of the batches topic. The same batch parked again after a crash overwrites its
    copy; a batch sent again on resume and parked again is a new message, so a new key: the
    tombstone of the copy it was sent from cannot drop it."""
    return f"{job_id}/{seq}/{origin}".encode()


@dataclass(frozen=True)
class ExportProgress:
    """An export has written ``written`` of its ``total`` records (absolute counts).
    Producer: the store's exporter. Consumer: the job tracker."""

    job_id: str
    written: int
    total: int
    at: str
    kind: str = "export_progress"


@dataclass(frozen=True)
class ExportDone:
    """An export wrote all its files: ``[{"name", "size", "records", "created_at"}]``.
    Producer: the store's exporter. Consumer: the job tracker."""

    job_id: str
    total: int
    files: list[dict[str, Any]]
    at: str
    kind: str = "export_done"


@dataclass(frozen=True)
class CallbackAttempt:
    """Attempt ``attempt`` (from 1) to deliver a finished job's completion webhook: ``error``
    None when the receiver answered 2xx, else why not; ``gave_up``: it was the last attempt
    (the job ended longer ago than ``BULKJOBS_WEBHOOK_MAX_AGE``). Producer: the worker's
    webhook sender (``streams.webhooks``). Consumer: the job tracker, which folds it into the
    job's ``callback`` (``domain.webhooks.attempted``)."""

    job_id: str
    attempt: int
    at: str
    error: str | None = None
    gave_up: bool = False
    kind: str = "callback_attempt"


@dataclass(frozen=True)
class JobRequest:
    """A job produced straight to Kafka announces itself: who it is for, what it does, and how
    many ``RecordPart`` messages follow. Producer: any outside producer (``docs/topics.md``),
    keyed by its job id. Consumer: the job tracker, which routes the parts into batches."""

    job_id: str
    tenant: str
    type: str
    action: str
    parts: int
    description: str | None = None
    callback_url: str | None = None  # where to POST the completion webhook (``domain.webhooks``)
    dry_run: bool = False  # apply nothing: report what the job would do (``domain.dry_run``)
    kind: str = "request"


@dataclass(frozen=True)
class RecordPart:
    """Part ``part`` (0-based) of a requested job's records, in record order. Producer: the
    outside producer of the ``JobRequest``, after it, with the same key. Consumer: the tracker."""

    job_id: str
    part: int
    records: list[Any]
    kind: str = "part"


JobEvent = (JobSubmitted | BatchDone | JobCommand | JobRequest | RecordPart | BatchParked | ExportProgress | ExportDone
            | CallbackAttempt)
MAX_PARTS = 100_000


def _check_request(request: JobRequest) -> JobRequest:
    if not isinstance(request.tenant, str) or not request.tenant:
        raise ValueError("'tenant' must be a non-empty string")
    if request.type not in ACTIONS:
        raise ValueError(f"unknown type {request.type!r}: one of " + ", ".join(ACTIONS))
    if request.action not in ACTIONS[request.type]:
        raise ValueError(f"action {request.action!r} is not one of " + ", ".join(sorted(ACTIONS[request.type])))
    if not isinstance(request.parts, int) or isinstance(request.parts, bool) or not 1 <= request.parts <= MAX_PARTS:
        raise ValueError(f"'parts' must be an integer from 1 to {MAX_PARTS}")
    if request.description is not None and not isinstance(request.description, str):
        raise ValueError("'description' must be a string")
    if request.callback_url is not None:
        try:
            check_callback_url(request.callback_url)
        except BadRequest as exc:
            raise ValueError(str(exc)) from None
    if not isinstance(request.dry_run, bool):
        raise ValueError("'dry_run' must be a boolean")
    return request


def _check_part(part: RecordPart) -> RecordPart:
    if not isinstance(part.part, int) or isinstance(part.part, bool) or part.part < 0:
        raise ValueError("'part' must be an integer >= 0")
    if not isinstance(part.records, list):
        raise ValueError("'records' must be a list")
    return part


# What each event kind (the wire field ``kind``) is read as; requests and parts are checked too.
_EVENT_TYPES: dict[str, Callable[..., JobEvent]] = {
    "submitted": JobSubmitted,
    "batch_done": BatchDone,
    **{command: JobCommand for command in COMMANDS},
    "batch_parked": BatchParked,
    "export_progress": ExportProgress,
    "export_done": ExportDone,
    "callback_attempt": CallbackAttempt,
    "request": lambda **data: _check_request(JobRequest(**data)),
    "part": lambda **data: _check_part(RecordPart(**data)),
}


def job_event_from(key: bytes | None, value: bytes) -> JobEvent:
    """A job event, checked; ValueError saying what is wrong with a malformed or unknown one."""
    try:
        data = decode(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the value is not a JSON object")
    event_kind = data.get("kind")
    make = _EVENT_TYPES.get(event_kind) if isinstance(event_kind, str) else None
    if make is None:
        raise ValueError(f"unknown job event kind {event_kind!r}")
    try:
        event = make(**data)
    except TypeError as exc:  # a field missing or unknown
        raise ValueError(f"a {event_kind!r} event with the wrong fields: {exc}") from None
    if not is_job_id(event.job_id):
        raise ValueError(f"'job_id' must be {JOB_ID_RULE}")
    if key != event.job_id.encode():
        raise ValueError("the message key must be the job id")
    return event


def names_in(key: bytes | None, value: bytes) -> tuple[str | None, str | None]:
    """(job id, tenant) that a malformed message names, where they can be read: the job id from
    its key, else from its ``job_id``; the tenant from its ``tenant``."""
    try:
        data = decode(value)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = {}
    job_id = key.decode("utf-8", "replace") if key else data.get("job_id")
    tenant = data.get("tenant")
    return (job_id if isinstance(job_id, str) and job_id else None,
            tenant if isinstance(tenant, str) and tenant else None)


# --- batches: no key; the producer picks the partition that owns the batch's records. --------


@dataclass(frozen=True)
class RecordBatch:
    """Up to ``batch_records`` records of one job, all owned by this partition.
    ``items`` are ``[index, fresh_id | null, record]`` or ``[index, null, null, reason]`` for a
    record refused on arrival (see ``domain.records.Refused``). Producers: the API, and the job
    tracker for the parts of a job produced to Kafka (both through ``kafka.batching``).
    Consumer: the batch applier (``apply_batches``)."""

    job_id: str
    tenant: str
    type: str
    action: str
    seq: int
    items: list[list[Any]] = field(default_factory=list)
    hold: bool = False  # a definition's batch, or one submitted suspended: park it, do not apply it
    sources: list[int] | None = None  # a retry's batch: each item's record index in the job retried
    dry_run: bool = False  # a dry run's batch: applied to the job's overlay, not to the index


# --- changes: no key; same partition number as the batch it came from. -----------------------


@dataclass(frozen=True)
class AppliedBatch:
    """What applying one batch did: per-record results, ops on objects and relationships, and
    the count delta. Producer: the batch applier. Consumers: the store (SQLite view) and every
    worker's object index (rebuilt from it on start and on partition assignment).

    A dry run's batch has no ``ops`` (the store writes its results only); its ``would_be`` ops,
    cut to what an overlay needs (``domain.dry_run.would_be_ops``), rebuild the job's overlay
    on a worker that reads them back."""

    job_id: str
    tenant: str
    seq: int
    at: str
    counts: dict[str, int]
    results: list[list[Any]]
    ops: list[list[Any]]
    host: str | None = None  # the worker's host name
    sources: list[int] | None = None  # a retry's batch: each result's record index in the job retried
    dry_run: bool = False
    would_be: list[list[Any]] = field(default_factory=list)  # a dry run's ops, had it been real

    @property
    def count_delta(self) -> Counts:
        return Counts.from_dict(self.counts)


# --- snapshots: compacted; partition p holds the snapshots of changes partition p. ----------
# A snapshot is chunks keyed ``p/<generation>/<n>``, then its manifest keyed ``p`` (written last,
# so a snapshot without one is incomplete and ignored), then tombstones for the previous
# generation's chunks. Producer and consumer: the worker (``streams.snapshots``).


@dataclass(frozen=True)
class SnapshotChunk:
    """A slice of a partition's index: ids by tenant, and applied-map entries
    ``[job_id, seq, counts]`` of jobs not yet terminal."""

    objects: dict[str, list[str]] = field(default_factory=dict)
    relationships: dict[str, list[str]] = field(default_factory=dict)
    applied: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SnapshotManifest:
    """A complete snapshot of changes partition ``partition``: everything up to and including
    ``changes_offset``, in the chunks at ``chunk_offsets`` (keys ``chunk_keys``)."""

    partition: int
    generation: str
    changes_offset: int
    chunk_keys: list[str]
    chunk_offsets: list[int]
    at: str
    kind: str = "snapshot_manifest"


def manifest_key(partition: int) -> bytes:
    return str(partition).encode()


def chunk_key(partition: int, generation: str, chunk: int) -> str:
    return f"{partition}/{generation}/{chunk}"


# --- status: key = job id. -------------------------------------------------------------------


# A job's full state after a change (a snapshot, so the latest one wins), on the same partition
# number as the job's events: every field of its ``Job`` (``Job.to_dict``), and its ``progress``.
# Producer: the job tracker. Consumers: the store, every worker (the tracker rebuilds its jobs
# from it; the applier stops cancelled jobs), outside users. ``batches``, ``done`` (a hex bit set
# of counted batches) and the part fields are the tracker's bookkeeping.
JobStatus = dict[str, Any]


def status_of(job: Job) -> JobStatus:
    return {**job.to_dict(), "progress": job.progress}


def status_message(job: Job, at: str) -> tuple[Job, bytes]:
    """The job's ``JobStatus`` as a message the producer accepts, and the job it tells. A status
    over ``MAX_VALUE_BYTES`` (or that cannot be encoded) is not retried for ever: the job fails
    with the reason and its status is sent without its details and with its description cut."""
    try:
        value = encode(status_of(job))
    except orjson.JSONEncodeError as exc:
        problem = f"it cannot be encoded ({exc})"
    else:
        if len(value) <= MAX_VALUE_BYTES:
            return job, value
        problem = f"it is {len(value)} bytes, over the limit of {MAX_VALUE_BYTES} bytes"
    small = jobs.shrunk(job, at, f"the job's status cannot be published: {problem}")
    return small, encode(status_of(small))


def job_from_status(status: JobStatus) -> Job:
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
