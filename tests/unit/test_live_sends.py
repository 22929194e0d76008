"""What a live socket sends when the view cannot be read for a moment (``api.live._send_changes``):
a finished job's status waits for the view, and is never dropped for a failed read."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from bulkjobs.api.common import READER
from bulkjobs.api.live import Follower, _send_changes
from bulkjobs.store import sqlite

FINISHED = {"id": "job-1", "tenant": "acme", "status": "succeeded", "counts": {"processed": 2, "created": 2}}


class FlakyView:
    """A view whose reads of a job fail ``failures`` times, then show ``FINISHED``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.reads = failures, error, 0

    async def job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        return dict(FINISHED)


class Request:
    def __init__(self, view: FlakyView) -> None:
        self.app = {READER: view}


class Socket:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[dict[str, Any]] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def close(self) -> None:
        self.closed = True


async def test_a_finished_job_whose_view_read_fails_is_sent_once_the_view_reads() -> None:
    view, ws, follower = FlakyView(3, sqlite.Error("database is locked")), Socket(), Follower()
    follower.offer(dict(FINISHED))
    await asyncio.wait_for(_send_changes(Request(view), ws, follower, close_when_done=True), 5)  # type: ignore[arg-type]
    assert ws.sent == [FINISHED] and ws.closed and view.reads == 4


async def test_a_status_that_cannot_be_shown_for_another_reason_is_dropped_and_the_next_one_goes() -> None:
    view, ws, follower = FlakyView(1, KeyError("tenant")), Socket(), Follower()
    follower.offer(dict(FINISHED))
    sending = asyncio.create_task(_send_changes(Request(view), ws, follower, close_when_done=True))  # type: ignore[arg-type]
    while view.reads < 1:
        await asyncio.sleep(0.01)
    assert ws.sent == [] and not follower.pending  # dropped in the round that read it
    follower.offer(dict(FINISHED))  # the job's next status
    await asyncio.wait_for(sending, 5)
    assert ws.sent == [FINISHED] and ws.closed
