"""Object identity and ownership: which id a record targets and which partition owns that id.

An object with an external id has a derived id, a hash of (tenant, type, external_id), so
that a record naming the external id and a record naming the id reach the same owner.
Ids are 32 hex digits; the first eight choose the owning partition.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from typing import Any

RESOURCES = "resources"
RELATIONSHIPS = "relationships"

ACTIONS: dict[str, frozenset[str]] = {
    RESOURCES: frozenset({"post", "update", "delete", "external_id_set", "external_id_delete"}),
    RELATIONSHIPS: frozenset({"post", "delete"}),
}


def derived_id(tenant: str, object_type: str, external_id: str) -> str:
    key = f"{tenant}\x00{object_type}\x00{external_id}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def partition_of(object_id: str, partitions: int) -> int:
    try:
        return int(object_id[:8], 16) % partitions
    except ValueError:  # not one of our ids: it exists nowhere, any stable owner will do
        return zlib.crc32(object_id.encode()) % partitions


def target_id(kind: str, action: str, tenant: str, record: Any) -> str:
    """The id a record acts on, or a fresh one for a record that creates without external id.

    A record too malformed to name an id gets a fresh id: its owner fails it on validation.
    """
    if isinstance(record, str):
        return record if record else new_id()
    if not isinstance(record, dict):
        return new_id()
    if kind == RESOURCES and action in ("post", "external_id_set", "external_id_delete"):
        object_type, external_id = record.get("type"), record.get("external_id")
        if isinstance(object_type, str) and isinstance(external_id, str) and object_type and external_id:
            return derived_id(tenant, object_type, external_id)
        return new_id()
    if action in ("update", "delete"):
        given = record.get("id")
        return given if isinstance(given, str) and given else new_id()
    return new_id()
