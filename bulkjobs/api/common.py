"""What the API's handlers share: the application's keys, JSON answers, paging and job lookup."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import orjson
from aiohttp import web

from bulkjobs.api.publisher import JobPublisher
from bulkjobs.domain.identity import is_job_id
from bulkjobs.errors import BadRequest, InvalidField, NotFound, check_known
from bulkjobs.settings import Settings
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import ViewReader

SETTINGS = web.AppKey("settings", Settings)
READER = web.AppKey("reader", ViewReader)
PUBLISHER = web.AppKey("publisher", JobPublisher)
ACCEPTED = web.AppKey("accepted", OrderedDict)
UPLOADS = web.AppKey("uploads", UploadFiles)  # CSV jobs' original files

ACCEPTED_MEMORY = 10_000
VIEW_WAIT = 10.0  # seconds a command waits for the view to show it before answering 202 (README)
VIEW_POLL = 0.05  # the longest pause between two looks at the view while waiting

T = TypeVar("T")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


# --- query parameters: each handler declares those it takes; any other is a 400 ---------------------

PAGING = ("limit", "offset")  # the query parameters of every paged list
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
