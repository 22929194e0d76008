"""The idempotency keys of job submissions: which ``Idempotency-Key`` of which tenant is being
received, or was answered with which job, in a SQLite file every API process shares.

A key is claimed with one atomic upsert, so of two processes racing on a key exactly one wins.
A claim holds a lease that its owner renews while it receives the body: the claim of a process
that died stops blocking its key once the lease runs out. An answer is kept until the key
expires (``BULKJOBS_IDEMPOTENCY_TTL``); expired keys are purged as new ones are claimed.
Every statement is a short transaction of its own, run off the event loop (aiosqlite).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bulkjobs.store import sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,         -- the claim's holder (a token per request)
    lease_until REAL NOT NULL,   -- while unanswered: the claim is the owner's until then
    expires_at REAL NOT NULL,    -- the key is forgotten after it
    digest TEXT,                 -- of the answered request (its body and the parameters that shape it)
    status INTEGER,              -- the answer, once there is one
    response BLOB,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_at);
"""

# A claim is taken over when its key expired, or when it is unanswered and its lease ran out.
_CLAIM = """
INSERT INTO idempotency_keys (tenant, key, owner, lease_until, expires_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (tenant, key) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until,
    expires_at = excluded.expires_at, digest = NULL, status = NULL, response = NULL
WHERE idempotency_keys.expires_at <= ? OR (idempotency_keys.response IS NULL AND idempotency_keys.lease_until <= ?)
"""
PURGE_EVERY = 60.0  # seconds between two purges of expired keys by one process
PURGE_ROWS = 1000  # expired keys deleted at most per purge: a short transaction, whatever the backlog
_PURGE = """
DELETE FROM idempotency_keys WHERE (tenant, key) IN
    (SELECT tenant, key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)
"""


@dataclass(frozen=True)
class Answered:
    """A key already answered: the request's digest and the answer to replay."""

    digest: str
    status: int
    response: bytes


class InUse:
    """A key another request holds: its body is still being received."""


class Claimed:
    """A key this request now holds."""


Claim = Answered | InUse | Claimed


class IdempotencyKeys:
    """The keys' table, through one connection of this process."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._purged_at = float("-inf")
        self._purge_left = False  # the last purge stopped at PURGE_ROWS: go on at the next claim

    @classmethod
    async def open(cls, path: Path) -> IdempotencyKeys:
        db = await sqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=10000")
        await db.executescript(SCHEMA)
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def claim(self, tenant: str, key: str, owner: str, *, now: float, lease: float, ttl: float) -> Claim:
        """Claim ``key`` for ``owner`` until ``now + lease``; or what holds it already."""
        if now - self._purged_at >= PURGE_EVERY or self._purge_left:
            cursor = await self.db.execute(_PURGE, (now, PURGE_ROWS))
            self._purged_at, self._purge_left = now, cursor.rowcount == PURGE_ROWS
        while True:
            await self.db.execute(_CLAIM, (tenant, key, owner, now + lease, now + ttl, now, now))
            # Read to the end in one call: a cursor left open between two awaits would keep a
            # read transaction open on the connection that this process's other requests write
            # through, and SQLite refuses their write at once ('database is locked', with no busy
            # wait) once another process has written since that read began.
            rows = await self.db.execute_fetchall(
                "SELECT owner, digest, status, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
                (tenant, key))
            row = next(iter(rows), None)
            if row is None:  # released between the two statements: claim it again
                continue
            if row[0] == owner:
                return Claimed()
            if row[3] is not None:
                return Answered(row[1], row[2], bytes(row[3]))
            return InUse()

    async def renew(self, tenant: str, key: str, owner: str, lease_until: float) -> bool:
        """Extend the owner's unanswered claim; False if it is no longer the owner's."""
        cursor = await self.db.execute(
            "UPDATE idempotency_keys SET lease_until = ? WHERE tenant = ? AND key = ? AND owner = ? "
            "AND response IS NULL", (lease_until, tenant, key, owner))
        return cursor.rowcount == 1

    async def answer(self, tenant: str, key: str, owner: str, *, digest: str, status: int, response: bytes,
                     expires_at: float) -> bool:
        """Keep the owner's answer until ``expires_at``; False if the claim is no longer the owner's."""
        cursor = await self.db.execute(
            "UPDATE idempotency_keys SET digest = ?, status = ?, response = ?, expires_at = ? "
            "WHERE tenant = ? AND key = ? AND owner = ?", (digest, status, response, expires_at, tenant, key, owner))
        return cursor.rowcount == 1

    async def release(self, tenant: str, key: str, owner: str) -> None:
        """Give up the owner's unanswered claim: its request was refused or failed."""
        await self.db.execute("DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND owner = ? "
                              "AND response IS NULL", (tenant, key, owner))
