"""The view's WAL checkpoints, run on a connection (and so a thread) of their own while the
feeder writes, so that its writer never waits for one.

A checkpoint copies the pages the WAL holds into the database file and fsyncs both. Left to
SQLite's automatic checkpoint it runs on the connection that committed, inside its COMMIT:
the writer's thread waited for it before its next transaction. Measured on the writer alone
(decoded applied batches, 24,000 records a transaction, 300,000 records; wall time a record,
the process's CPU in brackets): with 2M objects in the view 16.3 (13.6) us on its own
checkpoints against 14.5 (13.9) us with this one beside it; on an empty view, 1M records,
10.0 (8.9) against 9.2 (8.8); with no checkpoint at all 13.3 us (2M objects), the bound.

The checkpoints are PASSIVE: they never wait for, nor block, the writer or a reader; each
copies what no reader's snapshot still needs. The writer's automatic checkpoint stays as the
backstop (``schema.WAL_BACKSTOP_BYTES``) and is what bounds the WAL's size, see there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)

# At most one checkpoint a second while the feeder writes (none while it is idle). Each copies
# a page once however many transactions rewrote it since the last, so checkpointing after
# every transaction copied the id index's pages over and over (twice the bytes written, and
# no faster: 16.5 us a record, 2M objects) ; a second is about 256 MiB of WAL at the writer's
# fastest, the size at which it used to checkpoint.
CHECKPOINT_PAUSE = 1.0


async def checkpoint_passive(db: aiosqlite.Connection) -> None:
    async with db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
        await cursor.fetchone()


class Checkpointer:
    """Checkpoints the view at ``path`` after the writer said it ``wrote``, at most once every
    ``pause`` seconds. Never fatal: a checkpoint that fails is logged and the next one tried;
    one that cannot open the view is logged and stops (the backstop still bounds the WAL)."""

    def __init__(self, path: Path, pause: float = CHECKPOINT_PAUSE,
                 checkpoint: Callable[[aiosqlite.Connection], Awaitable[None]] = checkpoint_passive) -> None:
        self._path, self._pause, self._checkpoint = path, pause, checkpoint
        self._wrote = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="view-checkpointer")

    def wrote(self) -> None:
        """The writer committed a transaction: the WAL has grown."""
        self._wrote.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except Exception:
            log.exception("cannot open %s to checkpoint it: the writer's own checkpoints go on alone", self._path)
            return
        try:
            while True:
                await self._wrote.wait()
                self._wrote.clear()
                try:
                    await self._checkpoint(db)
                except Exception:
                    log.exception("checkpoint of %s failed: the next write tries again", self._path)
                await asyncio.sleep(self._pause)
        finally:
            await db.close()
