"""What the API's handlers share: the application's keys, JSON answers and their compression, paging
(with its links and cursors) and job lookup."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import orjson
from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding

from bulkjobs.api.publisher import JobPublisher
from bulkjobs.domain.changes import Outcome
from bulkjobs.domain.identity import is_job_id
from bulkjobs.errors import BadRequest, InvalidField, NotFound, check_known
from bulkjobs.settings import Settings
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import Page, Paging, ViewReader

SETTINGS = web.AppKey("settings", Settings)
READER = web.AppKey("reader", ViewReader)
PUBLISHER = web.AppKey("publisher", JobPublisher)
ACCEPTED = web.AppKey("accepted", OrderedDict)
UPLOADS = web.AppKey("uploads", UploadFiles)  # CSV jobs' original files

ACCEPTED_MEMORY = 10_000
VIEW_WAIT = 10.0  # seconds a command waits for the view to show it before answering 202 (README)
VIEW_POLL = 0.05  # the longest pause between two looks at the view while waiting

T = TypeVar("T")


COMPRESS_FROM = 1024  # bytes: a smaller body gains too little from gzip to be worth it
# Content that gzip would not make smaller.
COMPRESSED_TYPES = ("application/gzip", "application/zip", "application/zstd", "image/", "video/", "audio/")



def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


# --- query parameters: each handler declares those it takes; any other is a 400 ---------------------

PAGING = ("limit", "offset", "cursor")  # the query parameters of every paged list
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
_QUERY_PARAMS: dict[Handler, frozenset[str]] = {}


def takes_query(*names: str) -> Callable[[H], H]:
    """Declare the query parameters a handler takes (a handler that declares none takes none)."""
    def declare(handler: H) -> H:
        _QUERY_PARAMS[handler] = frozenset(names)
        return handler
    return declare


def query_params(handler: Handler) -> frozenset[str]:
    """The query parameters ``handler`` takes."""
    return _QUERY_PARAMS.get(handler, frozenset())


def check_query(request: web.Request, known: Collection[str]) -> None:
    """400 ``unknown_field`` naming the first query parameter that is not ``known``."""
    check_known(request.query.keys(), known, "query parameter")


def compress(request: web.Request, response: web.StreamResponse) -> None:
    """gzip the response as it is written, if the client accepts gzip and it is worth it: not a
    websocket, a file served as it is on disk (it answers ranges), a body already compressed, or
    a small one. Call it before a streamed response is prepared (``compression_middleware``
    calls it on every other response)."""
    if (isinstance(response, web.WebSocketResponse | web.FileResponse) or response.prepared
            or "gzip" not in request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
            or hdrs.CONTENT_ENCODING in response.headers or response.content_type.startswith(COMPRESSED_TYPES)):
        return
    if isinstance(response, web.Response) and not (isinstance(response.body, bytes | bytearray)
                                                   and len(response.body) >= COMPRESS_FROM):
        return
    response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    response.enable_compression(ContentCoding.gzip)


@web.middleware
async def compression_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
    """gzip every answer not yet sent that is worth it (``compress``)."""
    response = await handler(request)
    compress(request, response)
    return response


def attachment(name: str) -> dict[str, str]:
    """The header that makes a response a download named ``name`` (made safe for the header)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "download"
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def api_key(request: web.Request, from_query: bool = False) -> str | None:
    """The API key sent as x-api-key or as a bearer token, or (``from_query``: browsers cannot
    set headers on a websocket) as the ``api_key`` query parameter."""
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else request.query.get("api_key") if from_query else None
    return key or None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidField(f"'{name}' must be an integer", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}", field=name)
    return value


def paging(request: web.Request, default: int = 100, most: int = 1000) -> tuple[int, int]:
    """(limit, offset) from the query string (``PAGING``)."""
    return int_param(request, "limit", default, 1, most), int_param(request, "offset", 0, 0, 2**62)


def outcome_of(request: web.Request) -> str | None:
    """The outcome (``?outcome=``) a job's results are filtered by, if any; 400 naming the
    outcomes for any other value."""
    value = request.query.get("outcome")
    if value is None:
        return None
    if value not in Outcome.__members__.values():
        raise BadRequest(f"unknown outcome {value[:100]!r}: one of " + ", ".join(Outcome), field="outcome",
                         code="unknown_outcome", allowed=list(Outcome))
    return value


def _cursor(position: int, key: tuple[Any, ...]) -> str:
    """An opaque cursor: the position of the next page in the list and the sort key before it."""
    return base64.urlsafe_b64encode(orjson.dumps([position, *key])).rstrip(b"=").decode()


def page_of(request: web.Request) -> Paging:
    """Which page of a list the query string asks for: ``limit``, and ``cursor`` (from a
    ``next`` link) or ``offset`` (slower deep in a long list, kept for compatibility)."""
    limit, offset = paging(request)
    raw = request.query.get("cursor")
    if not raw:
        return Paging(limit, offset)
    if "offset" in request.query:
        raise BadRequest("send 'cursor' or 'offset', not both", field="cursor")
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        decoded = None
    if (not isinstance(decoded, list) or len(decoded) < 2 or not isinstance(decoded[0], int) or decoded[0] < 0
            or not all(isinstance(value, str | int | float | None) for value in decoded[1:])):
        raise BadRequest("'cursor' is not one this API gave: follow the list's Link header", field="cursor")
    return Paging(limit, decoded[0], tuple(decoded[1:]))


def page_links(request: web.Request, *, total: int, offset: int, limit: int, next_page: dict[str, str | int] | None
               ) -> dict[str, str]:
    """``X-Total-Count`` and ``Link`` for a page of a list starting at position ``offset``:
    ``rel="next"`` with the ``next_page`` parameters (a cursor or an offset) if one follows,
    ``rel="prev"`` unless the page is the first; the other query parameters are kept."""
    url = request.rel_url.with_query([(name, value) for name, value in request.query.items()
                                      if name not in ("cursor", "offset")])
    links = []
    if next_page is not None:
        links.append(f'<{url.update_query(next_page)}>; rel="next"')
    if offset > 0:
        links.append(f'<{url.update_query(offset=max(0, offset - limit))}>; rel="prev"')
    headers = {"X-Total-Count": str(total)}
    if links:
        headers["Link"] = ", ".join(links)
    return headers


def page_response(request: web.Request, paging: Paging, page: Page) -> web.Response:
    """A page of a list: ``{"items", "total"}`` with its ``X-Total-Count`` and ``Link`` headers;
    the ``next`` link's cursor holds the last item's sort key, so the next page is found by it."""
    next_page: dict[str, str | int] | None = None
    if page.more and page.last_key is not None:
        next_page = {"cursor": _cursor(paging.offset + len(page.items), page.last_key)}
    response = json_response({"items": page.items, "total": page.total})
    response.headers.update(page_links(request, total=page.total, offset=paging.offset, limit=paging.limit,
                                       next_page=next_page))
    return response


def remember(app: web.Application, tenant: str, job: dict[str, Any]) -> None:
    """Keep an accepted job at hand until the view has it, so a GET right after the 202 finds it."""
    accepted = app[ACCEPTED]
    accepted[job["id"]] = (tenant, job)
    while len(accepted) > ACCEPTED_MEMORY:
        accepted.popitem(last=False)


async def job_of(request: web.Request, job_id: str) -> dict[str, Any] | None:
    """The tenant's job ``job_id`` as the view shows it, or as this process accepted it while the
    view does not have it yet; None if there is none (an id that breaks the job id rule never is)."""
    tenant = request["tenant"]
    if not is_job_id(job_id):
        return None
    job = await request.app[READER].job(tenant, job_id)
    accepted = request.app[ACCEPTED]
    if job is not None:
        accepted.pop(job_id, None)
        return job
    remembered = accepted.get(job_id)
    if remembered is not None and remembered[0] == tenant:
        if not await request.app[READER].deleted(tenant, job_id):  # deleted through another API process
            return dict(remembered[1])
        accepted.pop(job_id, None)
    return None


async def find_job(request: web.Request) -> dict[str, Any]:
    job_id = request.match_info["job_id"]
    job = await job_of(request, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


async def until_shown(look: Callable[[], Awaitable[T | None]], timeout: float | None = None) -> T | None:
    """What ``look`` finds in the view once it finds something, looking again at once and then
    at most every ``VIEW_POLL`` s; None if ``timeout`` (``VIEW_WAIT``) passes first.

    A command is published to Kafka and applied by the tracker, and the store writes the outcome
    into the view: waiting here until the view shows it lets the answer say what the next read,
    through any API process, will show.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (VIEW_WAIT if timeout is None else timeout)
    pause = 0.005
    while True:
        found = await look()
        if found is not None:
            return found
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, VIEW_POLL)


async def answer_deleted(shown: Callable[[str, list[str]], Awaitable[set[str]]], tenant: str,
                         names: list[str]) -> web.Response:
    """204 once ``shown`` (which of the names the view still shows) finds none of them; 202
    listing them as ``pending`` if it still does after ``VIEW_WAIT``."""
    left = set(names)

    async def gone() -> bool | None:
        left.intersection_update(await shown(tenant, sorted(left)))
        return True if not left else None

    if await until_shown(gone) is None:
        return json_response({"status": "accepted", "pending": sorted(left),
                              "message": "the deletion is sent but the view does not show it yet: look again soon"},
                             202)
    return web.Response(status=204)
