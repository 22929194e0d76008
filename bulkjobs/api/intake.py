"""Job intake: ``POST /v1/jobs``, from the request to the 202, and ``POST /v1/jobs/{id}/retry``,
a new job of a finished job's failed records (their source in ``api.retries``).

A job comes as JSON records (an envelope, a bare array, NDJSON), as a CSV file (``text/csv``,
multipart, or the ``file_content`` of an envelope) or as an export. Each form reads top to
bottom: parse the body, check the job's fields, route its records into a spool, publish, answer.

- Nothing is published before the whole body is accepted (``api.spool``): a body refused
  halfway leaves no trace in Kafka, and a refused CSV job leaves no file behind.
- An envelope's keys may come in any order; records that arrive before the type and action are
  held on disk until those are known, so memory stays flat whatever the order.
- Each unit of synchronous work (routing a chunk, reading a CSV) runs in a thread with the
  garbage collector paused for it alone.
"""

from __future__ import annotations

import asyncio
import uuid
from array import array
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from bulkjobs.api import retries
from bulkjobs.api.bodies import BodyReader, Chunk, ParsedBody, parse_json, parse_ndjson
from bulkjobs.api.callbacks import check_callback
from bulkjobs.api.caps import ACTIVE_JOBS
from bulkjobs.api.common import (
    PUBLISHER,
    READER,
    SETTINGS,
    UPLOADS,
    check_query,
    find_job,
    json_response,
    remember,
    takes_query,
)
from bulkjobs.api.csv_jobs import CSV_QUERY, CSV_TYPES, MULTIPART, CsvUpload, receive, receive_text, spool_rows
from bulkjobs.api.decoding import body_reader, content_encoding
from bulkjobs.api.idempotency import before_publish, idempotent, is_repeat
from bulkjobs.api.metrics import Form, job_accepted
from bulkjobs.api.spool import BatchSpool, HeldChunks
from bulkjobs.clock import parse_time, utc_now
from bulkjobs.domain.dry_run import DRY_RUN, check_dry_run, dry_run_from_text, requested_dry_run
from bulkjobs.domain.exports import EXPORT_FIELDS, parse_export
from bulkjobs.domain.identity import ACTIONS, RESOURCES
from bulkjobs.domain.jobs import EXPORT, SCHEDULED, Job, public_body
from bulkjobs.domain.limits import check_description, check_job_size
from bulkjobs.domain.retries import NOT_RETRYABLE, check_retryable, nothing_to_retry, retried_outcomes
from bulkjobs.domain.schedules import check_schedule
from bulkjobs.domain.webhooks import with_callback
from bulkjobs.errors import (
    BadRequest,
    BulkJobsError,
    Conflict,
    InvalidField,
    TooLarge,
    UnsupportedMediaType,
    check_known,
)
from bulkjobs.gcpause import survivors_frozen, without_gc
from bulkjobs.kafka.topics import JobSubmitted, encode
from bulkjobs.settings import Settings

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
JSON_TYPES = {"application/json", "text/json", "application/octet-stream", ""}
READ_CHUNK = 256 * 1024  # a chunk is parsed and routed without yielding: keep it short
IMPORT = "import"
# What each form takes besides its records; anything else is a 400 unknown_field. An envelope and
# a multipart body take no query parameter but dry_run; a CSV body's are its settings (api.csv_jobs).
IMPORT_FIELDS = ("kind", "type", "action", "description", "data", "schedule", "callback_url", DRY_RUN)
BARE_QUERY = ("type", "action", "description", "callback_url")  # a bare array's or NDJSON's fields
EXPORT_REQUEST = (*EXPORT_FIELDS, "kind", "schedule", "callback_url", DRY_RUN)


@takes_query(*BARE_QUERY, *CSV_QUERY, DRY_RUN)  # those of every form: each form checks its own
async def create_job(request: web.Request) -> web.Response:
    """An import of JSON records, an import of a CSV file, or an export, by the body's form;
    429 before the body is read while the tenant is at its cap of active jobs (``api.caps``);
    once per ``Idempotency-Key`` (``api.idempotency``)."""
    return await idempotent(request, _admitted_job)


async def _admitted_job(request: web.Request) -> web.Response:
    if is_repeat(request):  # it publishes nothing, so the cap does not hold it back
        return await _create_job(request)
    async with request.app[ACTIVE_JOBS].admitted(request):
        return await _create_job(request)


async def _create_job(request: web.Request) -> web.Response:
    settings, job_id = request.app[SETTINGS], uuid.uuid4().hex
    content_type, encoding = request.content_type.lower(), content_encoding(request)
    _dry_run_details(request, None)  # a wrong ?dry_run is refused before the body is read
    if content_type in CSV_TYPES or content_type == MULTIPART:
        check_query(request, CSV_QUERY if content_type in CSV_TYPES else (DRY_RUN,))
        if content_type == MULTIPART and encoding != "identity":
            raise UnsupportedMediaType(f"content encoding {encoding!r} is not supported for multipart bodies: "
                                       "send the CSV as text/csv to compress it", code="unsupported_content_encoding")
        form = Form.MULTIPART if content_type == MULTIPART else Form.CSV
        return await _csv_job(request, job_id, receive(request, request.app[UPLOADS], job_id,
                                                       settings.max_upload_bytes), form)
    body = await _parse_body(request, settings)
    if _job_kind(body.fields) == EXPORT:
        return await _export_job(request, job_id, body)
    if "file_content" in body.fields:
        if body.has_data:
            raise BadRequest("a job takes either 'data' or 'file_content'", field="file_content")
        return await _csv_job(request, job_id, asyncio.to_thread(
            receive_text, body.fields, request.app[UPLOADS], job_id, settings.max_upload_bytes), Form.FILE_CONTENT)
    return await _json_job(request, job_id, body, Form.NDJSON if content_type in NDJSON_TYPES else Form.JSON)


async def _parse_body(request: web.Request, settings: Settings) -> ParsedBody:
    """The job's fields and its stream of records; a bare array's or NDJSON's fields (from the
    query) are checked before any record is parsed."""
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise TooLarge(f"the body is larger than the limit of {settings.max_body_bytes} bytes",
                       limit=settings.max_body_bytes)
    content_type = request.content_type.lower()
    if content_type in NDJSON_TYPES:
        parse = parse_ndjson
    elif content_type in JSON_TYPES:
        parse = parse_json
    else:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not supported: send application/json, application/x-ndjson, "
            "text/csv or multipart/form-data"
        )
    body = await parse(BodyReader(body_reader(request, READ_CHUNK), settings.max_body_bytes))
    check_query(request, (DRY_RUN,) if body.envelope else (*BARE_QUERY, DRY_RUN))
    if not body.envelope:  # a bare array or NDJSON: the job's fields are query parameters
        body.fields.update({key: value for key in BARE_QUERY if (value := request.query.get(key)) is not None})
        _job_fields(body.fields)  # refused before the records are parsed
    return body


async def _json_job(request: web.Request, job_id: str, body: ParsedBody, form: Form) -> web.Response:
    """Route the records into a spool as they are parsed, check the fields (an envelope's
    members after its data are known once the data is read), publish."""
    settings = request.app[SETTINGS]
    records = _JobRecords(settings, job_id, request["tenant"])
    check_known(body.fields, IMPORT_FIELDS)  # the members before the data, refused before it is read
    try:
        with survivors_frozen():  # the pending batches' records, between the chunks' units of work
            async for chunk in body.chunks:
                if not records.routing and "type" in body.fields and "action" in body.fields:
                    records.route_as(*_job_fields(body.fields)[:2])
                await records.add(chunk)
            record_type, action, description = _fields_after_data(body.fields)
            spool = await records.close(record_type, action)
    except BaseException:
        records.discard()
        raise
    finally:
        records.release_held()
    details = _dry_run_details(request, body.fields.get(DRY_RUN))
    job = Job(id=job_id, type=record_type, action=action, description=description, details=details or None)
    return await _publish(request, job, spool, body.fields.get("schedule"), form, body.fields.get("callback_url"))


async def _export_job(request: web.Request, job_id: str, body: ParsedBody) -> web.Response:
    if body.has_data:
        raise BadRequest("an export takes no 'data'", field="data")
    check_known(body.fields, EXPORT_REQUEST)
    if _dry_run_details(request, body.fields.get(DRY_RUN)):
        raise BadRequest("an export has no dry run: it changes no object, so running it is its own preview",
                         field=DRY_RUN, code="dry_run_not_supported")
    export = parse_export(body.fields)
    job = Job(id=job_id, type=EXPORT, action=EXPORT, description=export.description, details=export.details())
    return await _publish(request, job, None, body.fields.get("schedule"), Form.EXPORT, body.fields.get("callback_url"))


async def _csv_job(request: web.Request, job_id: str, receiving: Awaitable[CsvUpload], form: Form,
                   retry: retries.Retry | None = None) -> web.Response:
    """Save the file, plan the import from its header and spool its rows, publish; a CSV job
    whose request is refused leaves no file behind."""
    settings, tenant, uploads = request.app[SETTINGS], request["tenant"], request.app[UPLOADS]
    try:
        upload = await receiving
        plan, spool = await asyncio.to_thread(
            without_gc, spool_rows, uploads, job_id, upload, settings.max_records,
            lambda action: _new_spool(settings, job_id, tenant, RESOURCES, action, retry),
        )
    except BaseException:
        uploads.remove(job_id)
        raise
    details = {**plan.details(), "file": {"name": upload.name, "size": upload.size,
                                          "character_encoding": upload.encoding, "rows": spool.records},
               **_dry_run_details(request, upload.dry_run)}
    job = Job(id=job_id, type=RESOURCES, action=plan.action, description=upload.settings.description,
              details=details, retry_of=retry.of if retry else None)
    try:
        return await _publish(request, job, spool, upload.schedule, form, upload.callback_url)
    except BulkJobsError as exc:
        if exc.status < 500:  # refused (a schedule, its fields' size): nothing of it was published
            uploads.remove(job_id)
        raise


async def _publish(request: web.Request, job: Job, spool: BatchSpool | None, schedule: Any,
                   form: Form, callback_url: Any = None) -> web.Response:
    """Publish a job whose records are spooled (an export has none); answer 202 once Kafka
    has them all. With a schedule the job is a definition: its runs do the work. With a
    ``callback_url`` its completion webhook goes there (each run's, for a definition)."""
    tenant, created_at = request["tenant"], utc_now()
    try:
        await before_publish(request)  # a repeat of an answered Idempotency-Key ends here
        checked = check_schedule(schedule, parse_time(created_at)) if schedule is not None else None
        if callback_url is not None:
            url = await check_callback(request.app[SETTINGS], tenant, callback_url)
            job = replace(job, details=with_callback(job.details, url))
        total = spool.records if spool is not None else None
        job = replace(job, tenant=tenant, total=total, created_at=created_at, updated_at=created_at,
                      schedule=checked, status=SCHEDULED if checked else job.status)
        submitted = JobSubmitted(job_id=job.id, tenant=tenant, type=job.type, action=job.action,
                                 description=job.description, total=total,
                                 batches=spool.batches if spool is not None else 0, created_at=created_at,
                                 details=job.details, schedule=checked, retry_of=job.retry_of)
        check_job_size(len(encode(submitted)))
        await request.app[PUBLISHER].submit(submitted, spool)
    finally:
        if spool is not None:
            spool.discard()
    job_accepted(form, job.total or 0)
    body = public_body(job, retention=request.app[SETTINGS].job_retention)
    remember(request.app, tenant, body)
    return json_response(body, 202)


# --- retries -----------------------------------------------------------------------------------


@takes_query("include")
async def retry_job(request: web.Request) -> web.Response:
    """A new job of a finished job's failed records (and skipped ones with ``include=skipped``),
    taken in as any job is: spooled, under the tenant's cap, published."""
    outcomes = retried_outcomes(request.query.get("include"))
    original = await find_job(request)
    check_retryable(original)
    async with request.app[ACTIVE_JOBS].admitted(request):
        if original.get("file"):
            return await _retry_csv(request, original, outcomes)
        return await _retry_json(request, original, outcomes)


async def _retry_csv(request: web.Request, original: dict[str, Any], outcomes: frozenset[str]) -> web.Response:
    """A CSV job's retry: a new file of the header and the picked rows, taken in as a CSV job."""
    uploads, job_id = request.app[UPLOADS], uuid.uuid4().hex
    if not uploads.exists(original["id"]):
        raise Conflict(f"the file of job {original['id']!r} is gone: it cannot be retried", code=NOT_RETRYABLE)
    picked = await retries.selection(request.app[READER], original, outcomes)
    try:
        upload, retry = await retries.cut_file(uploads, original, job_id, picked)
        if not retry.sources:
            raise nothing_to_retry(original["id"], outcomes)
    except BaseException:
        uploads.remove(job_id)
        raise

    async def received() -> CsvUpload:
        return upload

    return await _csv_job(request, job_id, received(), Form.RETRY, retry)


async def _retry_json(request: web.Request, original: dict[str, Any], outcomes: frozenset[str]) -> web.Response:
    """A JSON job's retry: the bodies of its failed records, as the view keeps them."""
    settings, job_id = request.app[SETTINGS], uuid.uuid4().hex
    retry = retries.Retry(original["id"], array("q"))
    records = _JobRecords(settings, job_id, request["tenant"], retry)
    records.route_as(original["type"], original["action"])
    try:
        with survivors_frozen():  # as for a job's body: the pending batches' records, between chunks
            async for chunk in retries.failed_records(request.app[READER], original["id"], outcomes, retry.sources):
                await records.add(chunk)
        if not retry.sources:
            raise nothing_to_retry(original["id"], outcomes)
        spool = await records.close(original["type"], original["action"])
    except BaseException:
        records.discard()
        raise
    job = Job(id=job_id, type=original["type"], action=original["action"], description=original["description"],
              retry_of=original["id"])
    return await _publish(request, job, spool, None, Form.RETRY)


# --- the job's fields ---------------------------------------------------------------------------


def _job_kind(fields: dict[str, Any]) -> str:
    """What the request asks for: an import (the default) or an export."""
    kind = fields.get("kind")
    if kind is None:
        return IMPORT
    if kind not in (IMPORT, EXPORT):
        raise BadRequest(f"unknown kind {_shown(kind)}: import (the default) or export", field="kind")
    return str(kind)


def _job_fields(fields: dict[str, Any]) -> tuple[str, str, str | None]:
    """An import's record type, action and description, checked."""
    check_known(fields, IMPORT_FIELDS)
    record_type, action = fields.get("type"), fields.get("action")
    if record_type is None:
        raise BadRequest("'type' is required: one of " + ", ".join(ACTIONS), field="type")
    if not isinstance(record_type, str):
        raise InvalidField("'type' must be a string: one of " + ", ".join(ACTIONS), field="type")
    if record_type not in ACTIONS:
        raise BadRequest(f"unknown type {_shown(record_type)}: one of " + ", ".join(ACTIONS), field="type",
                         code="unknown_type")
    if action is None:
        raise BadRequest("'action' is required", field="action")
    if not isinstance(action, str):
        raise InvalidField("'action' must be a string", field="action")
    if not any(action in actions for actions in ACTIONS.values()):
        raise BadRequest(f"unknown action {_shown(action)}", field="action", code="unknown_action")
    if action not in ACTIONS[record_type]:
        raise BadRequest(
            f"action {action!r} is not allowed for type {record_type!r}: one of "
            + ", ".join(sorted(ACTIONS[record_type])),
            field="action", code="action_not_allowed",
        )
    check_dry_run(fields.get(DRY_RUN))
    return record_type, action, check_description(fields.get("description"))


def _fields_after_data(fields: dict[str, Any]) -> tuple[str, str, str | None]:
    """An envelope's members after its data are known once it is read: they must agree with it too."""
    if _job_kind(fields) == EXPORT:
        raise BadRequest("an export takes no 'data'", field="data")
    if "file_content" in fields:
        raise BadRequest("a job takes either 'data' or 'file_content'", field="file_content")
    return _job_fields(fields)


def _dry_run_details(request: web.Request, body_value: Any) -> dict[str, Any]:
    """What a job's details say of its dry run, from the ``dry_run`` query parameter and the
    body's ``dry_run`` (given both ways, they must agree): nothing for a real run."""
    query = request.query.get(DRY_RUN)
    dry_run = requested_dry_run(dry_run_from_text(query) if query is not None else None, check_dry_run(body_value))
    return {DRY_RUN: True} if dry_run else {}


def _shown(value: Any) -> str:
    """A client's value in a message, cut short."""
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


# --- routing the records ------------------------------------------------------------------------


def _new_spool(settings: Settings, job_id: str, tenant: str, record_type: str, action: str,
               retry: retries.Retry | None = None) -> BatchSpool:
    return BatchSpool(job_id=job_id, tenant=tenant, record_type=record_type, action=action,
                      partitions=settings.partitions, batch_records=settings.batch_records,
                      batch_bytes=settings.batch_bytes, directory=settings.data_dir / "spool",
                      sources=retry.sources if retry else None)


class _JobRecords:
    """A JSON job's records, routed into a spool once the record type and action are known
    (``route_as``) and held on disk until then; more records than the settings allow is a 413."""

    def __init__(self, settings: Settings, job_id: str, tenant: str, retry: retries.Retry | None = None) -> None:
        self.settings, self.job_id, self.tenant, self.retry = settings, job_id, tenant, retry
        self.spool: BatchSpool | None = None
        self.held: HeldChunks | None = None

    @property
    def routing(self) -> bool:
        return self.spool is not None

    def route_as(self, record_type: str, action: str) -> BatchSpool:
        self.spool = _new_spool(self.settings, self.job_id, self.tenant, record_type, action, self.retry)
        return self.spool

    async def add(self, chunk: Chunk) -> None:
        if self.spool is not None:
            await asyncio.to_thread(without_gc, self.spool.add, chunk.records, chunk.size, chunk.texts)
        else:
            self.held = self.held or HeldChunks(self.settings.data_dir / "spool")
            await asyncio.to_thread(self.held.add, chunk)
        count = (self.spool.records if self.spool else 0) + (self.held.records if self.held else 0)
        if count > self.settings.max_records:
            raise TooLarge(f"the job has more than the limit of {self.settings.max_records} records",
                           limit=self.settings.max_records, code="too_many_records")

    async def close(self, record_type: str, action: str) -> BatchSpool:
        """All records are parsed: route the held ones, a chunk at a time, and close the spool."""
        spool = self.spool if self.spool is not None else self.route_as(record_type, action)
        for raw, size in self.held or ():
            await asyncio.to_thread(without_gc, _add_raw, spool, raw, size)
        if spool.records == 0:
            raise BadRequest("'data' must be a non-empty list of records", field="data")
        spool.close()
        return spool

    def discard(self) -> None:
        """Let go of the spool: the job is refused."""
        if self.spool is not None:
            self.spool.discard()

    def release_held(self) -> None:
        """Let go of the held chunks: they are routed, or the job is refused."""
        if self.held is not None:
            self.held.discard()


def _add_raw(spool: BatchSpool, raw: bytes, size: int) -> None:
    spool.add(orjson.loads(raw), size)
