"""The HTTP API's composition: the routes of every module, the metrics, error and authentication
middleware, the resources (view, publisher, live feed) opened for the app's life, and the
dashboard's static files (``bulkjobs/api/ui``, served at ``/ui``)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from bulkjobs.api import downloads, export_files, idempotency, intake, lifecycle, live, metrics, reads
from bulkjobs.api.caps import ACTIVE_JOBS, ActiveJobs
from bulkjobs.api.common import (
    ACCEPTED,
    PUBLISHER,
    READER,
    SETTINGS,
    UPLOADS,
    Handler,
    api_key,
    check_query,
    compression_middleware,
    json_response,
    query_params,
)
from bulkjobs.api.publisher import JobPublisher
from bulkjobs.errors import BulkJobsError, NotFound, Unauthorized
from bulkjobs.kafka.admin import ensure_topics
from bulkjobs.kafka.topics import TopicNames
from bulkjobs.settings import Settings
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.idempotency import IdempotencyKeys
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

log = logging.getLogger(__name__)

Resources = Callable[[web.Application], AsyncIterator[None]]

# Answered without an API key.
OPEN_PATHS = frozenset({"/v1/health", "/v1/openapi.json", "/livez", "/readyz", "/metrics"})
# The HTTP contract as OpenAPI 3.1, kept by hand beside the handlers (a test holds it to the routes).
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by its route and status, outermost: errors are answers by then."""
    started, status = time.perf_counter(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect, passed on by errors_middleware
        status = exc.status
        raise
    finally:
        metrics.request_answered(request, status, time.perf_counter() - started)


UI_DIR = Path(__file__).with_name("ui")  # the dashboard's static files, shipped as package data
# The dashboard reaches only its own origin (the /v1 routes and their websockets), and renders
# the data it reads as text: nothing inline, nothing from elsewhere.
UI_POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
             "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
UI_CACHING = {"Cache-Control": "no-cache"}  # revalidated (ETag) on each load: a new version shows at once


CLIENT_CLOSED = 499  # nginx's status for a request whose client hung up before the answer


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BulkJobsError as exc:
        return json_response(exc.to_body(), exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = json_response({"error": {"code": code, "message": exc.reason}}, exc.status)
        if "Allow" in exc.headers:  # a 405 says which methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client hung up before its answer (mid-upload, say): what it sent was not
            # accepted, and no one reads this answer. Counted as nginx's 499, not as a 500.
            log.info("client hung up on %s %s", request.method, request.path)
            return json_response({"error": {"code": "client_closed_request",
                                            "message": "the client closed the connection"}}, CLIENT_CLOSED)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": {"code": "internal_error", "message": "internal server error"}}, 500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS or request.match_info.route.handler in live.HANDLERS:
        return await handler(request)  # live sockets authenticate after the upgrade (api.live)
    if request.path == "/ui" or request.path.startswith("/ui/"):
        return await handler(request)  # the dashboard's files are public: the app asks for the key itself
    key = api_key(request)
    if not key:
        raise Unauthorized("an API key is required: send it as x-api-key or as a bearer token")
    tenant = request.app[SETTINGS].api_keys.get(key)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    request["tenant"] = tenant
    return await handler(request)


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a query parameter the route does not take (``common.takes_query``), so that a
    misspelt filter is a 400 rather than a list that silently ignores it."""
    if request.match_info.http_exception is None:  # a route matched (else the 404 or 405 answers)
        check_query(request, query_params(request.match_info.route.handler))
    return await handler(request)


async def ui_redirect(request: web.Request) -> web.StreamResponse:
    """``GET /ui``: to ``/ui/``, so that the page's relative links (its files, ``../v1``) resolve."""
    raise web.HTTPFound(request.rel_url.with_path("/ui/"))


async def ui_index(request: web.Request) -> web.StreamResponse:
    """``GET /ui/``: the dashboard's page (a single page: it routes by the URL's fragment)."""
    return web.FileResponse(UI_DIR / "index.html", headers={"Content-Security-Policy": UI_POLICY, **UI_CACHING})


async def ui_file(request: web.Request) -> web.StreamResponse:
    """``GET /ui/<name>.js`` or ``.css``: one of the page's scripts or its style sheet."""
    path = UI_DIR / request.match_info["name"]
    if not path.is_file():
        raise NotFound(f"the dashboard has no file {request.match_info['name']!r}")
    return web.FileResponse(path, headers=UI_CACHING)


def add_openapi_route(app: web.Application) -> None:
    """``GET /v1/openapi.json``: the document, read once when the app is built."""
    document = OPENAPI_PATH.read_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/v1/openapi.json", openapi)


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/ui", ui_redirect)
    app.router.add_get("/ui/", ui_index)
    app.router.add_get(r"/ui/{name:[a-z]+\.(?:js|css)}", ui_file)


def build_app(settings: Settings, resources: Resources | None = None) -> web.Application:
    """The API's routes over ``resources``, which set the view reader, the publisher and the live
    feed for the app's life (by default opened from the settings; tests pass fakes)."""
    # Bodies are inflated by api.decoding, which answers every encoding problem in the JSON shape.
    app = web.Application(middlewares=[metrics_middleware, compression_middleware, errors_middleware,
                                       auth_middleware, query_middleware],
                          client_max_size=settings.max_body_bytes, handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[ACCEPTED] = OrderedDict()
    app[UPLOADS] = UploadFiles(settings.uploads_dir)
    app[ACTIVE_JOBS] = ActiveJobs(settings.max_active_jobs)
    app.router.add_post("/v1/jobs", intake.create_job)
    app.router.add_post("/v1/jobs/{job_id}/retry", intake.retry_job)
    app.router.add_get("/metrics", metrics.serve_metrics)
    reads.add_routes(app)
    lifecycle.add_routes(app)
    downloads.add_routes(app)
    live.add_routes(app)
    export_files.add_routes(app)
    add_openapi_route(app)
    add_ui_routes(app)
    app.cleanup_ctx.append(resources or _resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await ensure_topics(settings)
    db = await connect(settings.db_path)
    keys = await IdempotencyKeys.open(settings.idempotency_path)
    publisher = JobPublisher(settings)
    await publisher.start()
    feed = live.StatusFeed(settings.kafka_brokers, TopicNames(settings.topic_prefix).status)
    await feed.start()
    app[READER] = ViewReader(db, settings.job_retention)
    app[PUBLISHER] = publisher
    app[idempotency.KEYS] = keys
    app[live.FEED] = feed
    yield
    await feed.stop()
    await publisher.stop()
    await keys.close()
    await db.close()


def run_api(settings: Settings) -> None:
    web.run_app(build_app(settings), host=settings.host, port=settings.port, access_log=None,
                print=lambda text: log.info(text))
