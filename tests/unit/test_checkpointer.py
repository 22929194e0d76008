"""The view's checkpointer (``store.checkpointer``): it checkpoints after the writer wrote,
beside it, and its failures never reach the feeder."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest

from bulkjobs.store.checkpointer import Checkpointer
from bulkjobs.store.schema import connect


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Checkpoints:
    """Counts the checkpoints asked for; fails the ones listed."""

    def __init__(self, failing: tuple[int, ...] = ()) -> None:
        self.calls, self.failing = 0, failing

    async def __call__(self, db: aiosqlite.Connection) -> None:
        self.calls += 1
        if self.calls in self.failing:
            raise sqlite3.OperationalError("disk I/O error")


async def test_the_writes_reach_the_view_file_through_the_checkpointer_alone(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    db = await connect(path)  # the writer's own checkpoint waits for 512 MiB of WAL
    checkpointer = Checkpointer(path, pause=0)
    checkpointer.start()
    try:
        before = path.stat().st_size
        await db.executemany("INSERT INTO deleted_jobs (id, tenant) VALUES (?, 't1')",
                             [(f"job-{i:06d}" + "x" * 100,) for i in range(5000)])
        assert path.stat().st_size == before  # in the WAL only
        checkpointer.wrote()
        await eventually(lambda: path.stat().st_size > before)
        async with db.execute("SELECT count(*) FROM deleted_jobs") as cursor:
            assert await cursor.fetchone() == (5000,)
    finally:
        await checkpointer.stop()
        await db.close()


async def test_it_checkpoints_only_after_a_write(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    await (await connect(path)).close()
    checkpoints = Checkpoints()
    checkpointer = Checkpointer(path, pause=0, checkpoint=checkpoints)
    checkpointer.start()
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        assert checkpoints.calls == 0
        checkpointer.wrote()
        await eventually(lambda: checkpoints.calls == 1)
        checkpointer.wrote()
        await eventually(lambda: checkpoints.calls == 2)
    finally:
        await checkpointer.stop()


async def test_a_failed_checkpoint_is_logged_and_the_next_write_checkpoints_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "view.db"
    await (await connect(path)).close()
    checkpoints = Checkpoints(failing=(1,))
    checkpointer = Checkpointer(path, pause=0, checkpoint=checkpoints)
    checkpointer.start()
    try:
        with caplog.at_level(logging.ERROR, logger="bulkjobs.store.checkpointer"):
            checkpointer.wrote()
            await eventually(lambda: "checkpoint of" in caplog.text)
        checkpointer.wrote()
        await eventually(lambda: checkpoints.calls == 2)
    finally:
        await checkpointer.stop()


async def test_a_view_it_cannot_open_is_logged_and_stopping_it_is_quiet(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpointer = Checkpointer(tmp_path / "missing" / "view.db", pause=0)
    with caplog.at_level(logging.ERROR, logger="bulkjobs.store.checkpointer"):
        checkpointer.start()
        checkpointer.wrote()
        await eventually(lambda: "cannot open" in caplog.text)
    await checkpointer.stop()
