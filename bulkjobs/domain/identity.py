"""Object identity and ownership: which partition owns a record's object, and object ids.

Ids are 32 hex digits whose first eight pick the owning partition (``partition_of``). An
object with an external id has a derived id, ``crc32(key) + blake2b(key)`` of its key
(tenant, type, external_id): the router needs only the cheap crc32 to find the owner, and a
record naming the id reaches the same owner as one naming the external id. Objects created
without an external id, and relationships, get a fresh id from the router, a hash of the job id
and the record's index: unique, and the same when a record is routed again.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any

RESOURCES = "resources"
RELATIONSHIPS = "relationships"

ACTIONS: dict[str, frozenset[str]] = {
    RESOURCES: frozenset({"post", "update", "delete", "external_id_set", "external_id_update", "external_id_delete"}),
    RELATIONSHIPS: frozenset({"post", "delete"}),
}

# Actions whose records name their object by (type, external_id).
BY_EXTERNAL_ID = frozenset({"external_id_set", "external_id_update", "external_id_delete"})

# A job id: 32 hex digits from the API, or what an outside producer chose within this rule.
# Ids also name files and directories (a CSV job's upload, an export's files), so the rule
# keeps them plain names.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
JOB_ID_RULE = "1-64 letters, digits, '_' or '-'"


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


_crc32, _blake2b = zlib.crc32, hashlib.blake2b


def _key(tenant: str, object_type: str, external_id: str) -> bytes:
    return f"{tenant}\x00{object_type}\x00{external_id}".encode()


def derived_id(tenant: str, object_type: str, external_id: str) -> str:
    # Once per record on the worker's hot path: the hash functions are module names (two
    # attribute lookups fewer), and one hex conversion of the 16 bytes (formatting the crc32
    # on its own cost a fifth of the call).
    key = _key(tenant, object_type, external_id)
    return (_crc32(key).to_bytes(4, "big") + _blake2b(key, digest_size=12).digest()).hex()


def fresh_id(job_id: str, index: int) -> str:
    """The id of what record ``index`` of job ``job_id`` creates without an external id."""
    return hashlib.blake2b(f"{job_id}\x00{index}".encode(), digest_size=16).hexdigest()


def partition_of(object_id: str, partitions: int) -> int:
    try:
        return int(object_id[:8], 16) % partitions
    except ValueError:  # not one of our ids: it exists nowhere, any stable owner will do
        return zlib.crc32(object_id.encode()) % partitions


def route(record_type: str, action: str, tenant: str, record: Any, partitions: int, index: int,
          job_id: str) -> tuple[int, str | None]:
    """(owning partition, fresh id or None) for record ``index`` of job ``job_id``.

    A record that creates without an external id gets its fresh id here. A record too
    malformed to name an object goes to partition ``index``: its owner fails it.
    """
    if action in BY_EXTERNAL_ID or (action == "post" and record_type == RESOURCES):
        if isinstance(record, dict):
            object_type, external_id = record.get("type"), record.get("external_id")
            if isinstance(object_type, str) and isinstance(external_id, str):
                return _crc32(_key(tenant, object_type, external_id)) % partitions, None
            if action == "post" and external_id is None:
                fresh = fresh_id(job_id, index)
                return int(fresh[:8], 16) % partitions, fresh
        return index % partitions, None
    if action == "post":  # relationships
        fresh = fresh_id(job_id, index)
        return int(fresh[:8], 16) % partitions, fresh
    object_id = record.get("id") if isinstance(record, dict) else record
    if isinstance(object_id, str) and object_id:
        return partition_of(object_id, partitions), None
    return index % partitions, None
