"""The view's schema and how a connection to it is opened (WAL, one writer, many readers)."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT,
    action TEXT,
    description TEXT,
    status TEXT NOT NULL,
    total INTEGER,
    processed INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT,
    started_at TEXT,
    completed_at TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at DESC);
-- One row per applied batch whose results are stored: how many results a job has in the view.
CREATE TABLE IF NOT EXISTS job_batches (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    records INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    success INTEGER NOT NULL,
    object_id TEXT,
    errors TEXT,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
-- A rowid table with a unique id index: object ids are hashes, and inserting whole rows at
-- random places of a WITHOUT ROWID tree cost half the feeder's speed at a million objects.
CREATE TABLE IF NOT EXISTS objects (
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    external_id TEXT,
    attributes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_key ON objects (tenant, type, external_id);
CREATE TABLE IF NOT EXISTS relationships (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    relationship_type TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relationships_by_type ON relationships (tenant, relationship_type);
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at TEXT NOT NULL,
    partitions TEXT NOT NULL
);
"""


async def connect(path: Path) -> aiosqlite.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=10000")
    # Object ids are hashes, so inserts land all over the indexes: keep them in memory.
    await db.execute("PRAGMA cache_size=-262144")
    await db.execute("PRAGMA wal_autocheckpoint=16384")
    await db.executescript(SCHEMA)
    return db
