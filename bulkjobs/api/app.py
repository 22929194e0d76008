"""The HTTP API: routes, authentication and the error middleware, built from the settings."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import replace
from datetime import timedelta
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from bulkjobs.api import downloads, lifecycle, live
from bulkjobs.api import files as export_files
from bulkjobs.api.bodies import BodyReader, ParsedBody, parse_json, parse_ndjson
from bulkjobs.api.common import (
    ACCEPTED,
    FILES,
    PUBLISHER,
    READER,
    SETTINGS,
    api_key,
    find_job,
    json_response,
    paging,
    remember,
)
from bulkjobs.api.csv_jobs import (
    CSV_TYPES,
    MULTIPART,
    Upload,
    receive,
    receive_text,
    spool_rows,
)
from bulkjobs.api.decoding import body_reader, content_encoding
from bulkjobs.api.publisher import JobPublisher
from bulkjobs.api.spool import BatchSpool, HeldChunks
from bulkjobs.clock import parse_time, utc_now
from bulkjobs.domain.exports import parse_export
from bulkjobs.domain.identity import ACTIONS, RESOURCES
from bulkjobs.domain.jobs import EXPORT, SCHEDULED, Job, public_body
from bulkjobs.domain.limits import check_description, check_job_size
from bulkjobs.domain.schedules import check_schedule
from bulkjobs.errors import (
    BadRequest,
    BulkJobsError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from bulkjobs.gcpause import without_gc
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.topics import JobSubmitted, TopicNames, encode
from bulkjobs.settings import Settings
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

log = logging.getLogger(__name__)

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
JSON_TYPES = {"application/json", "text/json", "application/octet-stream", ""}
HEARTBEAT_MAX_AGE = timedelta(seconds=15)
READ_CHUNK = 256 * 1024  # a chunk is parsed and routed without yielding: keep it short
IMPORT = "import"


@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except BulkJobsError as exc:
        return json_response(exc.to_body(), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_response({"error": {"code": code, "message": exc.reason}}, exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": {"code": "internal_error", "message": "internal server error"}}, 500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if request.path == "/v1/health" or request.match_info.route.handler in live.HANDLERS:
        return await handler(request)  # live sockets authenticate after the upgrade (api.live)
    key = api_key(request)
    if not key:
        raise Unauthorized("an API key is required: send it as x-api-key or as a bearer token")
    tenant = request.app[SETTINGS].api_keys.get(key)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    request["tenant"] = tenant
    return await handler(request)


def _job_fields(fields: dict[str, Any]) -> tuple[str, str, str | None]:
    kind, action = fields.get("type"), fields.get("action")
    if kind is None:
        raise BadRequest("'type' is required: one of " + ", ".join(ACTIONS), field="type")
    if not isinstance(kind, str):
        raise BadRequest("'type' must be a string: one of " + ", ".join(ACTIONS), field="type", code="invalid_field")
    if kind not in ACTIONS:
        raise BadRequest(f"unknown type {_shown(kind)}: one of " + ", ".join(ACTIONS), field="type", code="unknown_type")
    if action is None:
        raise BadRequest("'action' is required", field="action")
    if not isinstance(action, str):
        raise BadRequest("'action' must be a string", field="action", code="invalid_field")
    if not any(action in actions for actions in ACTIONS.values()):
        raise BadRequest(f"unknown action {_shown(action)}", field="action", code="unknown_action")
    if action not in ACTIONS[kind]:
        raise BadRequest(
            f"action {action!r} is not allowed for type {kind!r}: one of " + ", ".join(sorted(ACTIONS[kind])),
            field="action", code="action_not_allowed",
        )
    return kind, action, check_description(fields.get("description"))


def _kind(fields: dict[str, Any]) -> str:
    """What the request asks for: an import (the default) or an export."""
    kind = fields.get("kind")
    if kind is None:
        return IMPORT
    if kind not in (IMPORT, EXPORT):
        raise BadRequest(f"unknown kind {_shown(kind)}: import (the default) or export", field="kind")
    return str(kind)


def _shown(value: Any) -> str:
    """A client's value in a message, cut short."""
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


async def _parse_body(request: web.Request, settings: Settings) -> ParsedBody:
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
    if not body.envelope:  # a bare array or NDJSON: the job's fields are query parameters
        body.fields.update({key: request.query[key] for key in ("type", "action", "description") if key in request.query})
        _job_fields(body.fields)  # refused before the records are parsed
    return body


async def create_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    job_id = uuid.uuid4().hex
    content_type = request.content_type.lower()
    encoding = content_encoding(request)
    if content_type == MULTIPART and encoding != "identity":
        raise UnsupportedMediaType(f"content encoding {encoding!r} is not supported for multipart bodies: "
                                   "send the CSV as text/csv to compress it", code="unsupported_content_encoding")
    if content_type in CSV_TYPES or content_type == MULTIPART:
        return await _create_csv_job(request, job_id, receive(request, request.app[FILES], job_id,
                                                              settings.max_upload_bytes))
    body = await _parse_body(request, settings)
    if _kind(body.fields) == EXPORT:
        if body.has_data:
            raise BadRequest("an export takes no 'data'", field="data")
        export = parse_export(body.fields)
        job = Job(id=job_id, type=EXPORT, action=EXPORT, description=export.description, details=export.details())
        return await _submit(request, job, None, body.fields.get("schedule"))
    if "file_content" in body.fields:
        if body.has_data:
            raise BadRequest("a job takes either 'data' or 'file_content'", field="file_content")
        return await _create_csv_job(request, job_id, asyncio.to_thread(
            receive_text, body.fields, request.app[FILES], job_id, settings.max_upload_bytes))
    return await _create_json_job(request, job_id, body)


async def _create_json_job(request: web.Request, job_id: str, body: ParsedBody) -> web.Response:
    """Route the records into a spool as they are parsed. An envelope whose type and action
    come after its data has its chunks held on disk until they are known."""
    settings, tenant = request.app[SETTINGS], request["tenant"]
    fields = body.fields
    spool: BatchSpool | None = None
    held: HeldChunks | None = None
    try:
        async for chunk in body.chunks:
            if spool is None and "type" in fields and "action" in fields:
                spool = _new_spool(settings, job_id, tenant, *_job_fields(fields)[:2])
            if spool is not None:
                await asyncio.to_thread(without_gc, spool.add, chunk.records, chunk.size)
            else:
                held = held or HeldChunks(settings.data_dir / "spool")
                await asyncio.to_thread(held.add, chunk)
            count = (spool.records if spool else 0) + (held.records if held else 0)
            if count > settings.max_records:
                raise TooLarge(f"the job has more than the limit of {settings.max_records} records",
                               limit=settings.max_records, code="too_many_records")
        # Members after the data are known now: they must agree with it too.
        if _kind(fields) == EXPORT:
            raise BadRequest("an export takes no 'data'", field="data")
        if "file_content" in fields:
            raise BadRequest("a job takes either 'data' or 'file_content'", field="file_content")
        kind, action, description = _job_fields(fields)
        if spool is None:
            spool = _new_spool(settings, job_id, tenant, kind, action)
        for raw, size in held or ():
            await asyncio.to_thread(without_gc, _add_raw, spool, raw, size)
        if spool.records == 0:
            raise BadRequest("'data' must be a non-empty list of records", field="data")
        spool.close()
    except BaseException:
        if spool is not None:
            spool.discard()
        raise
    finally:
        if held is not None:
            held.discard()
    job = Job(id=job_id, type=kind, action=action, description=description)
    return await _submit(request, job, spool, fields.get("schedule"))


def _add_raw(spool: BatchSpool, raw: bytes, size: int) -> None:
    spool.add(orjson.loads(raw), size)


async def _create_csv_job(request: web.Request, job_id: str, receiving: Awaitable[Upload]) -> web.Response:
    """Save the file, plan the import from its header and spool its rows; a CSV job whose
    request is refused leaves no file behind."""
    settings, tenant, files = request.app[SETTINGS], request["tenant"], request.app[FILES]
    try:
        upload = await receiving
        plan, spool = await asyncio.to_thread(
            without_gc, spool_rows, files, job_id, upload, settings.max_records,
            lambda action: _new_spool(settings, job_id, tenant, RESOURCES, action),
        )
    except BaseException:
        files.remove(job_id)
        raise
    details = {**plan.details(), "file": {"name": upload.name, "size": upload.size,
                                          "character_encoding": upload.encoding, "rows": spool.records}}
    job = Job(id=job_id, type=RESOURCES, action=plan.action, description=upload.settings.description,
              details=details)
    try:
        return await _submit(request, job, spool, upload.schedule)
    except BulkJobsError as exc:
        if exc.status < 500:  # refused (a schedule, its fields' size): nothing of it was published
            files.remove(job_id)
        raise


async def _submit(request: web.Request, job: Job, spool: BatchSpool | None, schedule: Any) -> web.Response:
    """Publish a job whose records are spooled (an export has none); answer 202 once Kafka
    has them all. With a schedule the job is a definition: its runs do the work."""
    tenant = request["tenant"]
    created_at = utc_now()
    try:
        checked = check_schedule(schedule, parse_time(created_at)) if schedule is not None else None
        total = spool.records if spool is not None else None
        job = replace(job, tenant=tenant, total=total, created_at=created_at, updated_at=created_at,
                      schedule=checked, status=SCHEDULED if checked else job.status)
        submitted = JobSubmitted(job_id=job.id, tenant=tenant, type=job.type, action=job.action,
                                 description=job.description, total=total,
                                 batches=spool.batches if spool is not None else 0, created_at=created_at,
                                 details=job.details, schedule=checked)
        check_job_size(len(encode(submitted)))
        await request.app[PUBLISHER].submit(submitted, spool)
    finally:
        if spool is not None:
            spool.discard()
    body = public_body(job)
    remember(request.app, tenant, body)
    return json_response(body, 202)


def _new_spool(settings: Settings, job_id: str, tenant: str, kind: str, action: str) -> BatchSpool:
    return BatchSpool(job_id=job_id, tenant=tenant, kind=kind, action=action, partitions=settings.partitions,
                      batch_records=settings.batch_records, batch_bytes=settings.batch_bytes,
                      directory=settings.data_dir / "spool")


async def get_job(request: web.Request) -> web.Response:
    return json_response(await find_job(request))


async def job_results(request: web.Request) -> web.Response:
    job = await find_job(request)
    limit, offset = paging(request)
    items = await request.app[READER].results(job["id"], limit, offset)
    return json_response({"items": items, "total": job["counts"]["processed"]})


async def get_object(request: web.Request) -> web.Response:
    object_id = request.match_info["object_id"]
    found = await request.app[READER].object(request["tenant"], object_id)
    if found is None:
        raise NotFound(f"object {object_id!r} not found")
    return json_response(found)


async def list_objects(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    items, total = await request.app[READER].objects(
        request["tenant"], request.query.get("type"), request.query.get("external_id"), limit, offset
    )
    return json_response({"items": items, "total": total})


async def get_relationship(request: web.Request) -> web.Response:
    rel_id = request.match_info["relationship_id"]
    found = await request.app[READER].relationship(request["tenant"], rel_id)
    if found is None:
        raise NotFound(f"relationship {rel_id!r} not found")
    return json_response(found)


async def list_relationships(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    items, total = await request.app[READER].relationships(
        request["tenant"], request.query.get("relationship_type"), limit, offset
    )
    return json_response({"items": items, "total": total})


async def health(request: web.Request) -> web.Response:
    """200 once a worker has reported through the broker and the store feeder within the last
    few seconds (the API's own producer is connected before it serves); the workers seen."""
    workers = await request.app[READER].workers(utc_now(ago=HEARTBEAT_MAX_AGE))
    if not workers:
        raise Unavailable(f"no worker has reported in the last {HEARTBEAT_MAX_AGE.total_seconds():.0f} s")
    return json_response({"status": "ok", "workers": workers})


def build_app(settings: Settings) -> web.Application:
    # Bodies are inflated by api.decoding, which answers every encoding problem in the JSON shape.
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=settings.max_body_bytes,
                          handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[ACCEPTED] = OrderedDict()
    app[FILES] = UploadFiles(settings.uploads_dir)
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/results", job_results)
    lifecycle.add_routes(app)
    app.router.add_get("/v1/objects", list_objects)
    app.router.add_get("/v1/objects/{object_id}", get_object)
    app.router.add_get("/v1/relationships", list_relationships)
    app.router.add_get("/v1/relationships/{relationship_id}", get_relationship)
    app.router.add_get("/v1/health", health)
    downloads.add_routes(app)
    live.add_routes(app)
    export_files.add_routes(app)
    app.cleanup_ctx.append(_resources)
    return app


async def _resources(app: web.Application) -> Any:
    settings = app[SETTINGS]
    await ensure_topics(settings)
    db = await connect(settings.db_path)
    publisher = JobPublisher(settings)
    await publisher.start()
    feed = live.StatusFeed(settings.kafka_brokers, TopicNames(settings.topic_prefix).status)
    await feed.start()
    app[READER] = ViewReader(db)
    app[PUBLISHER] = publisher
    app[live.FEED] = feed
    yield
    await feed.stop()
    await publisher.stop()
    await db.close()


def run_api(settings: Settings) -> None:
    web.run_app(build_app(settings), host=settings.host, port=settings.port, access_log=None,
                print=lambda text: log.info(text))
