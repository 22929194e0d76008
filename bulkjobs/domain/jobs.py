"""The job state machine: what each job event does to a job's status, counts and timestamps.

Events arrive at least once; a batch is counted once because its sequence number is kept in
``done`` (a bit set), so a redelivered batch changes nothing. A job produced straight to Kafka
arrives as a request and parts; the parts routed so far are kept in ``parts_done`` the same way,
with where the next part's records and batches start. A job whose submitter is still sending its
batches is ``uploading`` until the submitter seals it; one never sealed fails as
``upload_interrupted`` and none of its later batches is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, overload

from bulkjobs.clock import format_time, parse_time
from bulkjobs.domain.counts import Counts, progress
from bulkjobs.domain.dry_run import DRY_RUN

QUEUED = "queued"
PROCESSING = "processing"
SUCCEEDED = "succeeded"
PARTIALLY_SUCCEEDED = "partially_succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
SUSPENDED = "suspended"  # takes no new batches (a definition: does not fire) until resumed
SCHEDULED = "scheduled"  # a definition: its runs are created by its schedule
DELETED = "deleted"  # a tombstone: the job is gone from every view

EXPORT = "export"  # the type (and action) of an export job: it writes files, not objects

JOB_FAILED = "job_failed"  # error codes of a job that could not run (as opposed to its records failing)
UPLOAD_INTERRUPTED = "upload_interrupted"
STATUS_TOO_LARGE = "status_too_large"
MAX_REASON = 2000  # characters of a failure's reason kept in the job's error
MAX_SMALL_DESCRIPTION = 1000  # characters of the description a too-large status keeps

ACTIVE = frozenset({QUEUED, PROCESSING})  # counted against a tenant's cap (BULKJOBS_MAX_ACTIVE_JOBS)
TOO_MANY_ACTIVE_JOBS = "too_many_active_jobs"


def too_many_active(cap: int) -> str:
    """Why a job is refused when its tenant is at the cap."""
    return (f"the tenant has {cap} jobs queued or processing, the most it may have (BULKJOBS_MAX_ACTIVE_JOBS): "
            "send the job again once some have ended")


STATUSES = (QUEUED, PROCESSING, SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, SUSPENDED, SCHEDULED)
TERMINAL = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, DELETED})
LABELS = {
    QUEUED: "Queued", PROCESSING: "Processing", SUCCEEDED: "Succeeded",
    PARTIALLY_SUCCEEDED: "Partially succeeded", FAILED: "Failed", CANCELLED: "Cancelled",
    SUSPENDED: "Suspended", SCHEDULED: "Scheduled",
}

# What a client may ask of a job in each status. A command not listed answers 409.
# "update" also needs the job not to have started (see ``allowed``).
ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({"suspend", "cancel", "update"}),
    PROCESSING: frozenset({"suspend", "cancel"}),
    SUSPENDED: frozenset({"resume", "cancel", "update"}),
    SCHEDULED: frozenset({"suspend", "cancel", "update"}),
    SUCCEEDED: frozenset({"delete"}),
    PARTIALLY_SUCCEEDED: frozenset({"delete"}),
    FAILED: frozenset({"delete"}),
    CANCELLED: frozenset({"delete"}),
}


def allowed(status: str, started: bool, command: str) -> bool:
    """Whether ``command`` may be applied to a job in ``status`` (``started``: it has applied
    records, or a definition has fired)."""
    return command in ALLOWED.get(status, frozenset()) and not (command == "update" and started)


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
    details: dict[str, Any] | None = None  # the API's settings of the job (dry run, a CSV job's file, mapping)
    host: str | None = None  # the host of the worker that applied the job's first batch
    parts: int | None = None  # a job produced to Kafka: how many parts it announced
    parts_done: int = 0  # bit i set: part i has been routed into batches
    next_index: int = 0  # the index of the next part's first record
    next_seq: int = 0  # the seq of the next part's first batch
    parent_id: str | None = None  # a run: the scheduled definition it was made from
    schedule: dict[str, Any] | None = None  # a definition: {"immediately", "cron", "runs", "start_date"}
    runs_fired: int = 0  # a definition: the runs made so far
    last_due: str | None = None  # a definition: the schedule time of its latest run
    parked: list[list[int]] = field(default_factory=list)  # [partition, offset] of batches held back
    uploading: bool = False  # its submitter is still sending its batches: it has not sealed it yet
    retry_of: str | None = None  # a retry: the job whose failed (and skipped) records it holds
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

    @property
    def active(self) -> bool:
        """Whether it counts against its tenant's cap (``ACTIVE``); a job not announced yet does not."""
        return self.status in ACTIVE and bool(self.tenant)

    @property
    def dry_run(self) -> bool:
        """Whether it only reports what it would do (``domain.dry_run``); set in its details."""
        return bool((self.details or {}).get(DRY_RUN))

    @property
    def started(self) -> bool:
        return self.started_at is not None or self.runs_fired > 0

    @property
    def stops_batches(self) -> bool:
        """Whether no more of this job's batches may be applied: it was cancelled, deleted, or
        failed (its upload was interrupted, a message of it was refused...), so its counts stay
        those of the batches applied until then."""
        return self.status in (CANCELLED, DELETED, FAILED)

    @property
    def all_batches_in(self) -> bool:
        """Whether every batch of it has been counted (a job) or held (a definition): none can
        come any more but a redelivered one, which is known by what was applied."""
        if self.batches is None:
            return False
        return (len(self.parked) if self.schedule else self.done.bit_count()) >= self.batches

    @property
    def holds_batches(self) -> bool:
        """Whether a batch of this job is to be held back (parked) rather than applied."""
        return self.status in (SUSPENDED, SCHEDULED)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["done"] = format(self.done, "x")
        data["parts_done"] = format(self.parts_done, "x")
        data["counts"] = self.counts.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        values["done"] = int(values.get("done") or "0", 16)
        values["parts_done"] = int(values.get("parts_done") or "0", 16)
        values["counts"] = Counts.from_dict(values.get("counts") or {})
        return cls(**values)


def expires_at(job: Job, retention: int, status: str | None = None) -> str | None:
    """When a finished job (``status``, else its own, is terminal) is due to be deleted: ``retention``
    seconds (BULKJOBS_JOB_RETENTION) after it completed; None while it runs, or when jobs are kept
    forever (``retention`` 0). A definition that still has runs to fire is not finished."""
    if retention <= 0 or (status or job.status) not in TERMINAL or (status or job.status) == DELETED \
            or job.completed_at is None:
        return None
    return format_time(parse_time(job.completed_at) + timedelta(seconds=retention))


def expired(job: Job, retention: int, now: datetime) -> bool:
    """Whether the job is past its ``expires_at`` at ``now``, so the service deletes it."""
    due = expires_at(job, retention)
    return due is not None and parse_time(due) <= now


def public_body(job: Job, status: str | None = None, *, retention: int) -> dict[str, Any]:
    """The job as clients see it (HTTP, websocket): ``status`` overrides the job's own (see
    ``visible_status``); a CSV job's details (job type, operation, file...) sit at the top;
    ``expires_at`` follows from the job retention (seconds; 0 keeps jobs forever)."""
    return {
        "id": job.id,
        "status": status or job.status,
        "type": job.type,
        "action": job.action,
        "description": job.description,
        "job_type": None,
        "parent_id": job.parent_id,
        "schedule": job.schedule,
        "runs": job.runs_fired if job.schedule else None,
        "retry_of": job.retry_of,
        DRY_RUN: False,
        **(job.details or {}),
        "counts": {"total": job.total, **job.counts.to_dict()},
        "progress": job.progress,
        "error": job.error,
        "host": job.host,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "updated_at": job.updated_at,
        "expires_at": expires_at(job, retention, status),
    }


def submitted(job: Job, *, tenant: str, type: str, action: str, description: str | None,
              total: int | None, batches: int, created_at: str, details: dict[str, Any] | None = None,
              parent_id: str | None = None, schedule: dict[str, Any] | None = None,
              suspended: bool = False, uploading: bool = False, retry_of: str | None = None) -> Job:
    """The request is in Kafka: the job learns its totals (its batches may already be counted).
    With a ``schedule`` it is a definition, whose batches are held for its runs. ``uploading``:
    its batches are still being sent, and a ``sealed`` command will say when they all are."""
    if job.status == DELETED:
        return job
    latest = max(created_at, job.updated_at or created_at)  # batches may have been counted first
    status = job.status
    if job.tenant == "":  # the first time: later copies (redelivered) change no status and no seal
        if schedule or suspended:
            status = SUSPENDED if suspended else SCHEDULED
    else:
        uploading = job.uploading
    job = replace(job, tenant=tenant, type=type, action=action, description=description, details=details,
                  total=total, batches=batches, created_at=created_at, updated_at=latest, parent_id=parent_id,
                  schedule=schedule, status=status, uploading=uploading, retry_of=retry_of)
    return job if job.schedule else _finish_if_done(job, latest)


def requested(job: Job, *, tenant: str, type: str, action: str, description: str | None, parts: int,
              created_at: str, dry_run: bool = False) -> Job | None:
    """A job produced to Kafka announced itself; None when its id is already taken (a retry)."""
    if job.tenant or job.status != QUEUED:
        return None
    return replace(job, tenant=tenant, type=type, action=action, description=description, parts=parts,
                   details={DRY_RUN: True} if dry_run else None, created_at=created_at, updated_at=created_at)


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
    """Stop a job (or a definition) for good; its held batches are dropped. None if it had ended."""
    if not allowed(job.status, job.started, "cancel"):
        return None
    return replace(job, status=CANCELLED, parked=[], completed_at=at, updated_at=at)


def suspended(job: Job, at: str) -> Job | None:
    """Hold the job's batches (a definition: stop firing) until it is resumed."""
    if not allowed(job.status, job.started, "suspend"):
        return None
    return replace(job, status=SUSPENDED, updated_at=at)


def resumed(job: Job, at: str) -> Job | None:
    """Go on where the job stopped. A job (not a definition, which keeps them for its runs)
    lets go of its held batches: the caller sends them again (see ``released_batches``)."""
    if not allowed(job.status, job.started, "resume"):
        return None
    if job.schedule:
        status = SCHEDULED
    else:
        status = PROCESSING if job.started_at else QUEUED
    return replace(job, status=status, parked=[] if not job.schedule else job.parked, updated_at=at)


# What a command tells the batch appliers as soon as it is in Kafka (``notice``).
STOP, HOLD, GO_ON = "stop", "hold", "go_on"


def notice(command: str, changes: dict[str, Any] | None = None) -> str | None:
    """What a command means for a job's batches before the tracker has applied it: a cancel
    stops them for good, a suspend holds them, a resume (or an update that resumes) lets them go
    on; anything else waits for the tracker.

    Acting early is safe because the tracker refuses a cancel or a suspend only when the job
    has ended (none of its batches is due) or is suspended already. A delete means nothing
    early: the tracker refuses it while the job runs, and a job that has ended has stopped its
    batches already (its status says so); so the appliers keep no id for every job that is
    deleted or expires. An update that suspends is
    left to the tracker: it is refused once the job has started, and a hold the tracker does
    not share would park and release the same batches for ever.
    """
    if command == "cancel":
        return STOP
    if command == "suspend":
        return HOLD
    if command == "resume" or (command == "update" and (changes or {}).get("suspended") is False):
        return GO_ON
    return None


UPDATABLE = ("description", "schedule", "details")


def updated(job: Job, changes: dict[str, Any], at: str) -> Job | None:
    """Change a job that has not started: its description, schedule or details (an export's
    params), or suspend or resume it (``suspended``)."""
    if not allowed(job.status, job.started, "update"):
        return None
    values = {name: changes[name] for name in UPDATABLE if name in changes}
    job = replace(job, **values, updated_at=at)
    if "suspended" in changes:
        if changes["suspended"] and job.status != SUSPENDED:
            job = replace(job, status=SUSPENDED)
        elif not changes["suspended"] and job.status == SUSPENDED:
            job = replace(job, status=SCHEDULED if job.schedule else QUEUED,
                          parked=job.parked if job.schedule else [])
    elif "schedule" in changes and job.status in (QUEUED, SCHEDULED):
        job = replace(job, status=SCHEDULED if job.schedule else QUEUED)
    return job


def released_batches(before: Job, after: Job) -> list[list[int]]:
    """The held batches to send again after a change: those a job let go of while going on."""
    if after.terminal or after.parked:
        return []
    return before.parked


def parked(job: Job, partition: int, offset: int) -> Job | None:
    """A batch of the job was held back at (partition, offset); None if already known."""
    where = [partition, offset]
    if where in job.parked or job.terminal:
        return None
    return replace(job, parked=[*job.parked, where])


def files_deleted(job: Job, names: list[str], at: str) -> Job | None:
    """Some of an export's files were deleted; None if it has none of them."""
    files = (job.details or {}).get("files") or []
    kept = [file for file in files if file["name"] not in names]
    if len(kept) == len(files):
        return None
    return replace(job, details={**(job.details or {}), "files": kept}, updated_at=at)


def fired(job: Job, due: str, at: str) -> Job | None:
    """A definition made its next run, for the schedule time ``due``; None if that time has
    fired already (a repeated tick) or the definition no longer fires."""
    if job.status != SCHEDULED or (job.last_due is not None and due <= job.last_due):
        return None
    job = replace(job, runs_fired=job.runs_fired + 1, last_due=due, updated_at=at)
    runs = (job.schedule or {}).get("runs")
    if runs is not None and job.runs_fired >= runs:
        job = replace(job, status=SUCCEEDED, completed_at=at)
    return job


def export_progress(job: Job, written: int, total: int, at: str) -> Job | None:
    """An export wrote ``written`` of ``total`` records so far (absolute, so a repeat is harmless)."""
    if job.terminal:
        return None
    status = PROCESSING if job.status == QUEUED else job.status
    counts = replace(job.counts, processed=written)
    return replace(job, counts=counts, total=total, status=status, started_at=job.started_at or at, updated_at=at)


def export_done(job: Job, total: int, files: list[dict[str, Any]], at: str) -> Job | None:
    """An export finished: its files are written."""
    if job.terminal:
        return None
    counts = replace(job.counts, processed=total)
    return replace(job, counts=counts, total=total, status=SUCCEEDED, details={**(job.details or {}), "files": files},
                   started_at=job.started_at or at, completed_at=at, updated_at=at)


def failed(job: Job, at: str, reason: str, code: str = JOB_FAILED) -> Job | None:
    """The job itself could not run (its request never fully reached Kafka, or a message of it
    could not be handled); None if it had ended."""
    if job.terminal:
        return None
    return replace(job, status=FAILED, error={"code": code, "message": _cut(reason, MAX_REASON)},
                   completed_at=at, updated_at=at)


def sealed(job: Job) -> Job | None:
    """Its submitter has sent all the job's batches; None if it was not waiting for that."""
    return replace(job, uploading=False) if job.uploading else None


def upload_interrupted(job: Job, at: str, silent_for: float) -> Job | None:
    """Its submitter stopped (no word for ``silent_for`` seconds) before it had sent all the
    job's batches: the job fails with the batches applied so far; None if it was not uploading."""
    if not job.uploading or job.terminal:
        return None
    counted = job.done.bit_count()
    reason = (f"the job's upload was interrupted: its submitter sent no word for {silent_for:.0f} s before it had "
              f"sent all of its {job.batches} batches; it keeps the results of those applied by then "
              f"({counted}), and no more of it is applied")
    return failed(job, at, reason, UPLOAD_INTERRUPTED)


def shrunk(job: Job, at: str, reason: str) -> Job:
    """The job without what made its status too large to publish (its details, most of its
    description): failed with ``reason`` unless it had ended, so its owner learns why."""
    small = replace(job, details=None, description=_cut(job.description, MAX_SMALL_DESCRIPTION),
                    error=job.error and {**job.error, "message": _cut(job.error.get("message", ""), MAX_REASON)},
                    updated_at=at)
    return failed(small, at, reason, STATUS_TOO_LARGE) or small


@overload
def _cut(text: str, limit: int) -> str: ...
@overload
def _cut(text: str | None, limit: int) -> str | None: ...
def _cut(text: str | None, limit: int) -> str | None:
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def deleted(job: Job, at: str) -> Job | None:
    """Remove a finished job; None when it is still running (or already gone)."""
    if not job.terminal or job.status == DELETED:
        return None
    return replace(job, status=DELETED, updated_at=at)


def _finish_if_done(job: Job, at: str) -> Job:
    if job.terminal or job.type == EXPORT or job.batches is None or job.done.bit_count() < job.batches:
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
