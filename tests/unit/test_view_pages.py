"""The view's page size and WAL checkpoint interval (``store.schema.connect``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bulkjobs.store.schema import PAGE_SIZE, WAL_CHECKPOINT_BYTES, connect


async def pragma(path: Path, name: str) -> int:
    db = await connect(path)
    try:
        async with db.execute(f"PRAGMA {name}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])
    finally:
        await db.close()


async def test_a_new_view_has_big_pages_and_checkpoints_every_256_mib(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    assert await pragma(path, "page_size") == PAGE_SIZE == 32768
    assert await pragma(path, "wal_autocheckpoint") * PAGE_SIZE == WAL_CHECKPOINT_BYTES


async def test_an_older_view_keeps_its_pages_and_checkpoints_as_often_in_bytes(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.close()
    assert await pragma(path, "page_size") == 4096
    assert await pragma(path, "wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 4096
