"""Live job progress over websockets, fed by the status topic.

One ``StatusFeed`` per API process reads every partition of the status topic from its end,
without a consumer group, and offers each change to the sockets that follow that job or its
tenant. A following socket is a ``Follower`` and a task asleep on its event: nothing polls
while nothing changes, so idle sockets cost next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiokafka import TopicPartition

from bulkjobs.api.common import READER, SETTINGS, api_key, find_job, takes_query
from bulkjobs.domain.jobs import CANCELLED, DELETED, TERMINAL, public_body
from bulkjobs.errors import NotFound
from bulkjobs.kafka import clients
from bulkjobs.kafka.topics import decode, job_from_status
from bulkjobs.store import sqlite

log = logging.getLogger(__name__)

SEND_INTERVAL = 0.1  # at most ten messages a second per job and socket; the latest state always goes
NOT_FOUND_CLOSE = 4404  # an application close code (4000-4999): no such job for this tenant
READ_RETRY = 0.5  # seconds before reading the status topic again after a failed read


class Follower:
    """What one socket has still to send: the latest status of each job that changed."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    def offer(self, status: dict[str, Any]) -> None:
        self.pending[status["id"]] = status
        self.changed.set()


class StatusFeed:
    def __init__(self, brokers: str, topic: str) -> None:
        self.topic = topic
        self.consumer = clients.consumer(brokers)
        self.by_job: dict[str, set[Follower]] = defaultdict(set)
        self.by_tenant: dict[str, set[Follower]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.topics()  # loads the metadata that partitions_for_topic reads
        partitions = [TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic) or ()]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _run(self) -> None:
        """Read for as long as the API runs: a failed read is tried again, and a message that
        is not a status is logged and skipped, so the feed never stops for every socket."""
        while True:
            try:
                fetched = await self.consumer.getmany(timeout_ms=1000)
            except Exception:
                log.exception("reading %s failed; trying again", self.topic)
                await asyncio.sleep(READ_RETRY)
                continue
            if not (self.by_job or self.by_tenant):
                continue
            for messages in fetched.values():
                for message in messages:
                    try:
                        self._read(message.key, message.value)
                    except Exception:
                        log.exception("skipping a status that cannot be read: %s@%d", self.topic, message.offset)

    def _read(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        if key.decode() not in self.by_job and not self.by_tenant:
            return  # a tenant's followers need the status to tell whose it is
        status = decode(value)
        if not isinstance(status, dict) or not all(isinstance(status.get(k), str) for k in ("id", "tenant", "status")):
            raise ValueError("not a job status: it needs an id, a tenant and a status")
        self._offer(status)

    def _offer(self, status: dict[str, Any]) -> None:
        for follower in self.by_job.get(status["id"], set()) | self.by_tenant.get(status["tenant"], set()):
            follower.offer(status)

    @contextlib.contextmanager
    def follow(self, *, job_id: str | None = None, tenant: str | None = None) -> Iterator[Follower]:
        """A follower of one job, or of every job of a tenant, for as long as the block runs."""
        follower = Follower()
        index, key = (self.by_job, job_id) if job_id is not None else (self.by_tenant, tenant)
        assert key is not None
        index[key].add(follower)
        try:
            yield follower
        finally:
            index[key].discard(follower)
            if not index[key]:
                del index[key]


FEED = web.AppKey("status_feed", StatusFeed)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets", weakref.WeakSet)


async def _open(request: web.Request) -> web.WebSocketResponse:
    """Upgrade, then authenticate: a wrong key closes the socket before any data (and leaves
    ``request["tenant"]`` unset)."""
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    key = api_key(request, from_query=True)
    tenant = request.app[SETTINGS].api_keys.get(key) if key else None
    if tenant is None:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"a valid API key is required")
    else:
        request["tenant"] = tenant
        request.app[SOCKETS].add(ws)
    return ws


async def _visible(request: web.Request, status: dict[str, Any]) -> dict[str, Any] | None:
    """The body to send for a status: a finished job only once the view shows it finished
    (all its results readable), so a client may fetch them at once; None until then."""
    if status["status"] not in TERMINAL or status["status"] == CANCELLED:
        return public_body(job_from_status(status), retention=request.app[SETTINGS].job_retention)
    if status["status"] == DELETED:
        return None
    shown = await request.app[READER].job(status["tenant"], status["id"])
    return shown if shown is not None and shown["status"] in TERMINAL else None


async def _send_changes(request: web.Request, ws: web.WebSocketResponse, follower: Follower,
                        close_when_done: bool) -> None:
    """Send each job's latest state as it changes, at most every ``SEND_INTERVAL``; with
    ``close_when_done``, close normally after the terminal state. A finished job's state waits
    until the view shows it; a read of the view that fails is tried again in the next round,
    never dropped (a job socket would then wait forever for its end)."""
    unread: set[str] = set()  # jobs whose view read failed, logged once until it succeeds
    while not ws.closed:
        if not follower.pending:
            await follower.changed.wait()
        follower.changed.clear()
        for job_id, status in list(follower.pending.items()):
            try:
                body = await _visible(request, status)
            except sqlite.Error:  # the view could not be read just now: look again, as for a view behind
                if job_id not in unread:
                    unread.add(job_id)
                    log.exception("cannot read job %s in the view; trying again", job_id)
                continue
            except Exception:  # this status cannot be shown: the next one of the job may
                log.exception("cannot show a status of job %s", job_id)
                if follower.pending.get(job_id) is status:
                    del follower.pending[job_id]
                continue
            unread.discard(job_id)
            if body is None:
                if status["status"] == DELETED:
                    del follower.pending[job_id]
                continue  # finished, but not all results are in the view yet: look again soon
            if follower.pending.get(job_id) is status:
                del follower.pending[job_id]
            await _send(ws, body)
            if close_when_done and body["status"] in TERMINAL:
                await ws.close()
                return
        await asyncio.sleep(SEND_INTERVAL)


async def _send(ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
    await ws.send_str(orjson.dumps(body).decode())


async def _serve(ws: web.WebSocketResponse, sender: asyncio.Task[None]) -> None:
    """Read what the client sends (only close frames matter) until the socket closes."""
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


@takes_query("api_key")
async def job_live(request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/jobs/{id}/live``: the job's state now, then each change, then a normal close."""
    ws = await _open(request)
    if ws.closed:
        return ws
    job_id = request.match_info["job_id"]
    with request.app[FEED].follow(job_id=job_id) as follower:  # before the first read: miss nothing
        try:
            job = await find_job(request)
        except NotFound as exc:
            await ws.close(code=NOT_FOUND_CLOSE, message=exc.message.encode()[:120])
            return ws
        await _send(ws, job)
        if job["status"] in TERMINAL:
            await ws.close()
            return ws
        await _serve(ws, asyncio.create_task(_send_changes(request, ws, follower, close_when_done=True)))
    return ws


@takes_query("api_key")
async def tenant_live(request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/live``: the tenant's running jobs now, then every change of any of its jobs."""
    ws = await _open(request)
    if ws.closed:
        return ws
    tenant = request["tenant"]
    with request.app[FEED].follow(tenant=tenant) as follower:
        for status in ("queued", "processing"):
            running, _ = await request.app[READER].jobs(tenant, status=status, limit=1000)
            for job in running:
                await _send(ws, job)
        await _serve(ws, asyncio.create_task(_send_changes(request, ws, follower, close_when_done=False)))
    return ws


async def close_sockets(app: web.Application) -> None:
    """On shutdown: tell every follower the server is going away."""
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


HANDLERS = (job_live, tenant_live)  # they authenticate after the upgrade: the auth middleware lets them by


def add_routes(app: web.Application) -> None:
    app[SOCKETS] = weakref.WeakSet()
    app.router.add_get("/v1/jobs/{job_id}/live", job_live)
    app.router.add_get("/v1/live", tenant_live)
    app.on_shutdown.append(close_sockets)
