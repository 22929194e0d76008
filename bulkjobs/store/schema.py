"""The view's schema and how a connection to it is opened (WAL, one writer, many readers)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiosqlite

from bulkjobs.store import sqlite

log = logging.getLogger(__name__)

# Raise it with every change below: a view of another version is dropped (see _migrate).
VERSION = 11

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT,
    action TEXT,
    description TEXT,
    job_type TEXT,
    status TEXT NOT NULL,
    total INTEGER,
    processed INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    details TEXT,
    host TEXT,
    parent_id TEXT,
    schedule TEXT,
    runs_fired INTEGER NOT NULL DEFAULT 0,
    retry_of TEXT,
    created_at TEXT,
    started_at TEXT,
    completed_at TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_parent ON jobs (parent_id, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (tenant, status);  -- a tenant's active jobs, counted at the door
-- One row per applied batch: how many results a job has in the view, where and when each batch
-- was applied (the job's log), and its results, packed as the worker wrote them (a JSON array of
-- [index, success, id, errors, outcome(, record)], and a retry's ``sources`` give, per result,
-- the record's index in the job retried). Why packed: a row per result cost the store 1.8 of its
-- 7.4 us a record (the row, the key and an index of outcomes), where one value per batch is
-- appended at the end of the tree. The reader merges the batches covering a page into record order
-- (reader.ViewReader.results): a batch holds its partition's share of an index range, so
-- ``first_idx`` and ``last_idx`` bound it, and its counts tell which outcomes it holds.
-- A rowid table: a WITHOUT ROWID tree compares whole rows as it seeks, and each holds tens of
-- KB (a page of 101 results, from a job of 1M, took 11 ms against 3.7).
CREATE TABLE IF NOT EXISTS job_batches (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    records INTEGER NOT NULL,
    at TEXT,
    host TEXT,
    counts TEXT,
    first_idx INTEGER,  -- NULL for a batch without results
    last_idx INTEGER,
    sources BLOB,
    results BLOB NOT NULL,  -- last: the columns before it are read without its overflow pages
    UNIQUE (job_id, seq)
);
-- With ``records``, the index answers how many results a job has in the view (every status read
-- sums them) without reading the rows, each of which fills most of a page: 0.05 against 5 ms for
-- a job of 1,000 batches.
CREATE INDEX IF NOT EXISTS job_batches_by_index ON job_batches (job_id, first_idx, last_idx, records);
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
-- The object and relationship lists' order (oldest first), of all types and of one, so that a
-- page is read from the index wherever it starts (keyset paging, reader.Paging). The objects'
-- ties are in rowid order (reader.OBJECT_ORDER), which ends every index of theirs.
CREATE INDEX IF NOT EXISTS objects_by_time ON objects (tenant, created_at);
CREATE INDEX IF NOT EXISTS objects_by_type_time ON objects (tenant, type, created_at);
CREATE TABLE IF NOT EXISTS relationships (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    relationship_type TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relationships_by_time ON relationships (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS relationships_by_type ON relationships (tenant, relationship_type, created_at, id);
-- The files of finished export jobs, as the job's latest status lists them (details.files).
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    job_title TEXT,
    type TEXT NOT NULL,
    size INTEGER NOT NULL,
    records INTEGER NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, created_at DESC);
CREATE INDEX IF NOT EXISTS files_by_job ON files (job_id);
-- The ids of deleted jobs: an API process that still remembers a job it accepted (see
-- api.common.remember) must not show it again once it is gone.
CREATE TABLE IF NOT EXISTS deleted_jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL
) WITHOUT ROWID;

-- Where the store is in each partition it reads: the offset of the next message, written in
-- the transaction of the rows it made (see store.feeder).
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at TEXT NOT NULL,
    partitions TEXT NOT NULL
);
"""


# Tables of earlier versions, dropped with the others when a view of another version is.
RETIRED_TABLES = ("results",)
TABLES = ("jobs", "job_batches", "objects", "relationships", "files", "deleted_jobs", "workers",
          "positions")


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Make the view match this version's schema, whichever process opens it first.

    The view is derived from the topics, so a view of another version is dropped rather than
    altered: with its positions gone, the store reads every topic again from the beginning
    (as far as the topics' retention keeps them) and rebuilds it.
    """
    await db.execute("BEGIN IMMEDIATE")  # the API and the store may open a new file together
    try:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        if version != VERSION:
            async with db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'") as cursor:
                row = await cursor.fetchone()
            if row and row[0]:
                log.warning("the view in %s has schema version %d, not %d: dropping it", path, version, VERSION)
            for table in (*TABLES, *RETIRED_TABLES):
                await db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


PAGE_SIZE = 32768
# A checkpoint copies each page the WAL holds once, however many commits wrote it: with the
# id index's pages rewritten by every big transaction, a longer WAL copies fewer of them (the
# writer alone, 200k records into a view of 2M objects: 1.9 GB written with 64 MiB, 1.3 GB
# with 256 MiB, 16.1 -> 15.0 µs a record).
WAL_CHECKPOINT_BYTES = 256 * 1024 * 1024


async def connect(path: Path) -> aiosqlite.Connection:
    db = await sqlite.connect(path)
    # Only a new file takes it (before WAL is on). Bigger pages make shallower trees, fewer
    # splits and fewer WAL frames per insert. Measured on the writer alone (SQLite 3.51, CPU
    # µs a record of SQLite's work): 32 KiB pages 5.9 against 6.7 with 16 KiB on an empty view
    # and 12.6 against 14.5 with 2M objects in it; 64 KiB 6.9-7.9 on an empty view. 16 KiB
    # had beaten 4 KiB by as much (11.4 against 12.8-13.8 on SQLite 3.40).
    await db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=10000")
    # Object ids are hashes, so inserts land all over the indexes: keep them in memory.
    await db.execute("PRAGMA cache_size=-262144")
    async with db.execute("PRAGMA page_size") as cursor:
        row = await cursor.fetchone()
    # Checkpoint every WAL_CHECKPOINT_BYTES, whatever the page size of the file (an older view's is 4 KiB).
    await db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // (row[0] if row else PAGE_SIZE)}")
    await _migrate(db, path)
    return db
