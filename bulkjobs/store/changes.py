"""How the view writer reads a message of the changes topic (an ``AppliedBatch``): decoded into
typed structs, with what the view stores as the worker wrote it kept as raw JSON.

Each create's and patch's attributes, and a batch's results and sources, go into the view as
the JSON text they arrived as (``msgspec.Raw``, a slice of the message), so the writer neither
builds them as Python objects nor encodes them again. Decoding a poll's messages into dicts and
encoding those parts again cost the store 3.3-3.6 us a record, reading them like this 1.5-1.9
(bench/README.md, issue 13's ninth round).

The structs follow the layouts of ``domain.changes`` by position (each op is a JSON array whose
first item, its type, picks the struct). Anything else fails to decode with a ``ValueError``
(``msgspec.ValidationError`` is one): an op of an unknown type, a field of the wrong type, a
result that is not ``[index, success, id, errors, outcome, ...]`` with an integer index.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec
from msgspec import Raw, Struct

from bulkjobs.domain.changes import OP_CREATE, OP_DELETE, OP_PATCH, OP_REL_CREATE, OP_REL_DELETE


class Create(Struct, array_like=True, frozen=True, tag=OP_CREATE, tag_field="op"):
    id: str
    tenant: str
    type: str
    external_id: str | None
    attributes: Raw
    at: str


class Patch(Struct, array_like=True, frozen=True, tag=OP_PATCH, tag_field="op"):
    id: str
    attributes: Raw
    at: str


class Delete(Struct, array_like=True, frozen=True, tag=OP_DELETE, tag_field="op"):
    id: str


class RelCreate(Struct, array_like=True, frozen=True, tag=OP_REL_CREATE, tag_field="op"):
    id: str
    tenant: str
    relationship_type: str
    source: str
    target: str
    at: str


class RelDelete(Struct, array_like=True, frozen=True, tag=OP_REL_DELETE, tag_field="op"):
    id: str


Op = Create | Patch | Delete | RelCreate | RelDelete


_NULL = Raw(b"null")


class Applied(Struct, frozen=True):
    """The fields of an ``AppliedBatch`` the view writes (a dry run's ``would_be`` is not one)."""

    job_id: str
    seq: int
    at: str
    counts: dict[str, Any] | None
    results: Raw  # a JSON array of results, stored as it came
    ops: list[Op]
    host: str | None = None
    sources: Raw = _NULL  # a retry's: each result's record index in the job retried (else null)


class _ResultHead(Struct, array_like=True, frozen=True):
    """A result's first five fields: their shape is checked, and only the index is kept."""

    index: int
    success: Any
    id: Any
    errors: Any
    outcome: Any


_applied = msgspec.json.Decoder(Applied)
_result_heads = msgspec.json.Decoder(list[_ResultHead])
_sources = msgspec.json.Decoder(list[int])
_index = attrgetter("index")


def decode_applied(value: bytes) -> Applied:
    """A changes message's value read as an ``Applied``; ValueError if it is not one."""
    return _applied.decode(value)


def index_range(results: Raw) -> tuple[int, int, int] | tuple[int, None, None]:
    """How many results a batch has and the lowest and highest record index among them (None,
    None for none); ValueError if one is not a result as a worker writes it, so that no reader
    meets it."""
    indexes = list(map(_index, _result_heads.decode(results)))
    if not indexes:
        return 0, None, None
    return len(indexes), min(indexes), max(indexes)


def retry_sources(applied: Applied, records: int) -> bytes | None:
    """A retry's ``sources`` as they came (None for a batch of another job); ValueError unless
    they list one record index per result."""
    sources = bytes(applied.sources)
    if sources == b"null":
        return None
    if len(_sources.decode(sources)) != records:
        raise ValueError("a retry's sources do not match its results")
    return sources
