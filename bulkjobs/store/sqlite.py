"""The SQLite library behind every connection the service opens: the one built into the
``pysqlite3-binary`` wheel where it is installed (a recent SQLite), else Python's own ``sqlite3``.

Why: the store's single thread sets the pace of a large job (bench/README.md, "What sets the
pace"), and SQLite's own steps are half of its CPU. The writer alone, 300,000 records on an
empty view, cost 7.5-7.7 us a record with the SQLite 3.40 that Python's ``sqlite3`` links here,
and 6.2-6.4 with the wheel's 3.51. The wheel exists for Linux on x86-64 only (pyproject.toml's
marker); elsewhere the stdlib's SQLite serves, slower but the same.

The two are separate modules with their own exception and ``Row`` classes, so code that opens a
connection, catches its errors or sets its row factory takes them from here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType

import aiosqlite


def _library() -> ModuleType:
    try:
        from pysqlite3 import dbapi2  # type: ignore[import-untyped]  # the wheel has no type hints
    except ImportError:
        return sqlite3
    return dbapi2  # type: ignore[no-any-return]


library: ModuleType = _library()
Error: type[Exception] = library.Error
Row: type[sqlite3.Row] = library.Row  # the same interface as the stdlib's, whichever it is


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection to the file at ``path`` (made with its directory if new) in
    autocommit mode (its callers begin and commit their own transactions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.Connection(lambda: library.connect(str(path), isolation_level=None), iter_chunk_size=64)
    # The wheel's SQLite is built to auto-vacuum new files: every commit that frees pages would
    # move pages to the file's end and truncate it (a deleted job's results, in the transaction
    # that deletes them), and every new page would update a pointer map. A new file keeps
    # Python's default instead: freed pages are reused for the next rows. (A file that has
    # tables keeps its mode whatever this says.)
    await db.execute("PRAGMA auto_vacuum = NONE")
    return db


def connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A plain connection that can only read the file at ``path`` (for the view's metrics)."""
    connection: sqlite3.Connection = library.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout)
    return connection
