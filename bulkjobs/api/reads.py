"""Plain reads: a job and its results, objects and relationships from the view, and the
service's health: the whole system's (``/v1/health``) and, for orchestrators, this process's
(``/livez``: it runs; ``/readyz``: it can publish to Kafka and read the view). (Lists of jobs,
runs and history are in ``api.lifecycle``.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from aiohttp import web

from bulkjobs.api.common import (
    PAGING,
    PUBLISHER,
    READER,
    find_job,
    json_response,
    outcome_of,
    page_of,
    page_response,
    takes_query,
)
from bulkjobs.clock import utc_now
from bulkjobs.errors import NotFound, Unavailable
from bulkjobs.store.reader import Page

HEARTBEAT_MAX_AGE = timedelta(seconds=15)
READY_TIMEOUT = 2.0  # seconds for each readiness check: an orchestrator's probe gives up after a few


async def get_job(request: web.Request) -> web.Response:
    return json_response(await find_job(request))


@takes_query("outcome", *PAGING)
async def job_results(request: web.Request) -> web.Response:
    """A job's results (of one ``outcome``, if given) from record index ``offset`` on, or after
    the index a cursor holds: a result's position in the list is its index."""
    job, outcome = await find_job(request), outcome_of(request)
    paging = page_of(request)
    start = paging.offset if paging.after is None else int(paging.after[0]) + 1
    items = await request.app[READER].results(job["id"], paging.limit + 1, start, outcome=outcome)
    last_key = (items[paging.limit - 1]["index"],) if len(items) > paging.limit else None
    total = job["counts"]["processed" if outcome is None else outcome]
    page = Page(items[:paging.limit], total, last_key is not None, last_key)
    return page_response(request, replace(paging, offset=start), page)


async def get_object(request: web.Request) -> web.Response:
    object_id = request.match_info["object_id"]
    found = await request.app[READER].object(request["tenant"], object_id)
    if found is None:
        raise NotFound(f"object {object_id!r} not found")
    return json_response(found)


@takes_query("type", "external_id", *PAGING)
async def list_objects(request: web.Request) -> web.Response:
    paging = page_of(request)
    page = await request.app[READER].objects(request["tenant"], request.query.get("type"),
                                             request.query.get("external_id"), paging)
    return page_response(request, paging, page)


async def get_relationship(request: web.Request) -> web.Response:
    rel_id = request.match_info["relationship_id"]
    found = await request.app[READER].relationship(request["tenant"], rel_id)
    if found is None:
        raise NotFound(f"relationship {rel_id!r} not found")
    return json_response(found)


@takes_query("relationship_type", *PAGING)
async def list_relationships(request: web.Request) -> web.Response:
    paging = page_of(request)
    page = await request.app[READER].relationships(request["tenant"], request.query.get("relationship_type"), paging)
    return page_response(request, paging, page)


async def health(request: web.Request) -> web.Response:
    """200 once a worker has reported through the broker and the store feeder within the last
    few seconds (the API's own producer is connected before it serves); the workers seen."""
    workers = await request.app[READER].workers(utc_now(ago=HEARTBEAT_MAX_AGE))
    if not workers:
        raise Unavailable(f"no worker has reported in the last {HEARTBEAT_MAX_AGE.total_seconds():.0f} s")
    return json_response({"status": "ok", "workers": workers})


async def livez(request: web.Request) -> web.Response:
    """200 while the process serves."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 if the broker answers this API's producer and the view can be read, each within
    READY_TIMEOUT; 503 saying which cannot otherwise."""
    try:
        await asyncio.wait_for(request.app[PUBLISHER].reachable(), READY_TIMEOUT)
    except Exception as exc:
        raise Unavailable(f"Kafka cannot be reached: {exc!r}") from None
    try:
        await asyncio.wait_for(request.app[READER].job("", ""), READY_TIMEOUT)  # a key lookup: a trivial read
    except Exception as exc:
        raise Unavailable(f"the view cannot be read: {exc!r}") from None
    return json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/results", job_results)
    app.router.add_get("/v1/objects", list_objects)
    app.router.add_get("/v1/objects/{object_id}", get_object)
    app.router.add_get("/v1/relationships", list_relationships)
    app.router.add_get("/v1/relationships/{relationship_id}", get_relationship)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
