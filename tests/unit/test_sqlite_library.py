"""Every connection goes through one SQLite library (``store.sqlite``): the wheel's recent SQLite
where it is installed, and its own errors and rows."""

from __future__ import annotations

import contextlib
import platform
import sqlite3
import sys
from pathlib import Path

import pytest

from bulkjobs.store import sqlite


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="the pysqlite3-binary wheel exists for Linux on x86-64 only")
def test_the_wheels_recent_sqlite_is_the_one_used() -> None:
    assert sqlite.library is not sqlite3
    version = tuple(int(part) for part in sqlite.library.sqlite_version.split("."))
    assert version >= (3, 51), version


async def test_a_connection_commits_what_it_is_told_and_raises_the_librarys_errors(tmp_path: Path) -> None:
    db = await sqlite.connect(tmp_path / "v.db")
    try:
        assert (await db.execute_fetchall("PRAGMA auto_vacuum")) == [(0,)]  # none: freed pages are reused
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        await db.execute("BEGIN")  # autocommit mode: the caller's own transactions
        await db.execute("INSERT INTO t VALUES ('a', 1)")
        await db.execute("COMMIT")
        db.row_factory = sqlite.Row
        rows = await db.execute_fetchall("SELECT k, v FROM t")
        assert [dict(row) for row in rows] == [{"k": "a", "v": 1}]
        with pytest.raises(sqlite.Error):
            await db.execute("INSERT INTO t VALUES ('a', 2)")
    finally:
        await db.close()
    with contextlib.closing(sqlite.connect_read_only(tmp_path / "v.db", timeout=1)) as reader:
        assert reader.execute("SELECT v FROM t").fetchall() == [(1,)]
        with pytest.raises(sqlite.Error):  # read only
            reader.execute("INSERT INTO t VALUES ('b', 2)")
