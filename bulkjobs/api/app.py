"""The HTTP API's composition: the routes of every module, the error and authentication
middleware, and the resources (view, publisher, live feed) opened for the app's life."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from bulkjobs.api import downloads, export_files, intake, lifecycle, live, reads
from bulkjobs.api.common import ACCEPTED, PUBLISHER, READER, SETTINGS, UPLOADS, api_key, json_response
from bulkjobs.api.publisher import JobPublisher
from bulkjobs.errors import BulkJobsError, Unauthorized
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.topics import TopicNames
from bulkjobs.settings import Settings
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Resources = Callable[[web.Application], AsyncIterator[None]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in reads.OPEN_PATHS or request.match_info.route.handler in live.HANDLERS:
        return await handler(request)  # live sockets authenticate after the upgrade (api.live)
    key = api_key(request)
    if not key:
        raise Unauthorized("an API key is required: send it as x-api-key or as a bearer token")
    tenant = request.app[SETTINGS].api_keys.get(key)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    request["tenant"] = tenant
    return await handler(request)


def build_app(settings: Settings, resources: Resources | None = None) -> web.Application:
    """The API's routes over ``resources``, which set the view reader, the publisher and the live
    feed for the app's life (by default opened from the settings; tests pass fakes)."""
    # Bodies are inflated by api.decoding, which answers every encoding problem in the JSON shape.
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=settings.max_body_bytes,
                          handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[ACCEPTED] = OrderedDict()
    app[UPLOADS] = UploadFiles(settings.uploads_dir)
    app.router.add_post("/v1/jobs", intake.create_job)
    reads.add_routes(app)
    lifecycle.add_routes(app)
    downloads.add_routes(app)
    live.add_routes(app)
    export_files.add_routes(app)
    app.cleanup_ctx.append(resources or _resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
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
