"""Dry runs: the ``dry_run`` flag as clients send it, and the overlay a dry run is applied to.

A dry run applies every record with the same rules as a real run (``domain.records``), but
against an ``Overlay`` of the object index instead of the index itself: the overlay keeps a
copy of only the ids the job has touched (created or deleted, as the real run would have)
and reads every other id through to the live index, which it never writes. Records of the
same job therefore see each other's would-be effects, as in a real run, and the index and
the view stay as they were. The worker keeps one overlay per job and partition
(``Overlays``), since a partition's records only touch the ids that partition owns, and
drops it once the job has ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bulkjobs.domain.changes import (
    CREATE_TENANT,
    OP_CREATE,
    OP_DELETE,
    OP_ID,
    OP_REL_CREATE,
    OP_REL_DELETE,
    OP_TYPE,
    Op,
)
from bulkjobs.domain.records import IdMap, ObjectIndex
from bulkjobs.errors import BadRequest, InvalidField

DRY_RUN = "dry_run"  # the field, query parameter and CSV setting, and its key in a job's details
_TEXT_VALUES = {"true": True, "false": False}


def check_dry_run(value: Any) -> bool | None:
    """The flag from a JSON value (absent is None); a 400 for anything but a boolean."""
    if value is None or isinstance(value, bool):
        return value
    raise InvalidField("'dry_run' must be a boolean: true or false", field=DRY_RUN)


def dry_run_from_text(text: str) -> bool:
    """The flag from a query parameter or a form field: ``true`` or ``false``; a 400 otherwise."""
    value = _TEXT_VALUES.get(text)
    if value is None:
        raise InvalidField(f"'dry_run' must be true or false, not {text[:100]!r}", field=DRY_RUN)
    return value


def requested_dry_run(*given: bool | None) -> bool:
    """Whether the job is a dry run, from the flag in each place the request may carry it (the
    query string, the body); a 400 when two places disagree."""
    values = {value for value in given if value is not None}
    if len(values) > 1:
        raise BadRequest("'dry_run' is given twice, as true and as false: give it once", field=DRY_RUN,
                         code="conflicting_dry_run")
    return values.pop() if values else False


class LayeredIds:
    """An id -> tenant map as a dry run has changed it: the ids it set or dropped are kept here
    (a dropped id as None), every other id is read from the base, which is never written."""

    def __init__(self, base: IdMap) -> None:
        self.base = base
        self.changed: dict[str, str | None] = {}

    def get(self, key: str, /) -> str | None:
        if key in self.changed:
            return self.changed[key]
        return self.base.get(key)

    def __contains__(self, key: object, /) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def set(self, key: str, tenant: str) -> None:
        self.changed[key] = tenant

    def drop(self, key: str) -> None:
        self.changed[key] = None


class Overlay:
    """An ``ObjectIndex`` as one dry run sees it: what ``apply_batch`` reads and writes in its place."""

    def __init__(self, base: ObjectIndex) -> None:
        self.base = base
        self.objects = LayeredIds(base.objects)
        self.relationships = LayeredIds(base.relationships)

    def tenant_anywhere(self, object_id: str) -> str | None:
        """An object's tenant in any partition: as this dry run changed it, else as the index has it."""
        if object_id in self.objects.changed:
            return self.objects.changed[object_id]
        return self.base.tenant_anywhere(object_id)

    def __len__(self) -> int:
        """How many ids the dry run has touched (what the overlay holds in memory)."""
        return len(self.objects.changed) + len(self.relationships.changed)

    def apply_op(self, op: Op) -> None:
        op_type = op[OP_TYPE]
        if op_type == OP_CREATE:
            self.objects.set(op[OP_ID], op[CREATE_TENANT])
        elif op_type == OP_DELETE:
            self.objects.drop(op[OP_ID])
        elif op_type == OP_REL_CREATE:
            self.relationships.set(op[OP_ID], op[CREATE_TENANT])  # REL_TENANT: the same position
        elif op_type == OP_REL_DELETE:
            self.relationships.drop(op[OP_ID])


def would_be_ops(ops: list[Op]) -> list[Op]:
    """What an overlay needs of a dry run's ops, to be rebuilt from them: creates and deletes,
    cut to their type, id and tenant (patches change no id, attributes no overlay)."""
    return [op[:CREATE_TENANT + 1] if op[OP_TYPE] in (OP_CREATE, OP_REL_CREATE) else op[:OP_ID + 1]
            for op in ops if op[OP_TYPE] in (OP_CREATE, OP_DELETE, OP_REL_CREATE, OP_REL_DELETE)]


class Overlays:
    """The overlays of the dry runs a worker is applying, one per job and partition."""

    def __init__(self, base: Callable[[int], ObjectIndex]) -> None:
        self.base = base  # a partition's index as it is when an overlay is made (a restore may replace it)
        self._overlays: dict[tuple[str, int], Overlay] = {}

    def __len__(self) -> int:
        return len(self._overlays)

    def of(self, job_id: str, partition: int) -> Overlay:
        """The job's overlay on ``partition``, made empty the first time."""
        overlay = self._overlays.get((job_id, partition))
        if overlay is None:
            overlay = self._overlays[(job_id, partition)] = Overlay(self.base(partition))
        return overlay

    def replay(self, job_id: str, partition: int, ops: Iterable[Op]) -> None:
        """Apply a dry-run batch's would-be ops read back from the changes topic (after a restart
        or a rebalance), so that the job's next batches see them."""
        overlay = self.of(job_id, partition)
        for op in ops:
            overlay.apply_op(op)

    def drop_ended(self, ended: Callable[[str], bool]) -> None:
        """Let go of the overlays of the jobs that have ended: none of their batches is due."""
        for key in [key for key in self._overlays if ended(key[0])]:
            del self._overlays[key]

    def on(self, partition: int) -> bool:
        """Whether a dry run has an overlay on ``partition``."""
        return any(key[1] == partition for key in self._overlays)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Let go of the overlays of partitions another worker applies now."""
        gone = set(partitions)
        for key in [key for key in self._overlays if key[1] in gone]:
            del self._overlays[key]
