"""What applying a batch changes, as it travels on the changes topic: a result per record (with
its outcome) and ops on objects and relationships.

Results and ops are JSON lists, not objects, to keep the changes topic small and the hot path
free of per-record objects. The comments below give their layouts, and the index constants name
the positions read outside the rules: the rules (``domain.records``) build them in this order,
the object index and the view's reader read them through these names, and the view writer reads
the same layouts by position, as typed structs (``store.changes``).
"""

from __future__ import annotations

from enum import StrEnum
from operator import itemgetter
from typing import Any


class Outcome(StrEnum):
    """What happened to one record (a result's last field). Not a job's status: a record
    ``failed`` when it was refused, a job when it could not run."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    SKIPPED = "skipped"  # refused before it reached its owner (a bad CSV row)
    FAILED = "failed"  # refused on arrival or by a rule


# A result: [index, success, id | None, [Error] | None, outcome], and for a record that failed
# on its owner, the record as sent (last): a retry of the job sends it again (only failures pay).
Result = list[Any]
RESULT_INDEX, RESULT_SUCCESS, RESULT_ID, RESULT_ERRORS, RESULT_OUTCOME, RESULT_RECORD = range(6)
result_index = itemgetter(RESULT_INDEX)  # a result's record index (a sort key that loops in C)

# An op: [op_type, id, ...], the rest by op type.
Op = list[Any]
OP_TYPE, OP_ID = 0, 1

OP_CREATE = "create"  # [op_type, id, tenant, object_type, external_id | None, attributes, at]
CREATE_TENANT = 2

OP_PATCH = "patch"  # [op_type, id, attributes, at]

OP_DELETE = "delete"  # [op_type, id]

OP_REL_CREATE = "rel_create"  # [op_type, id, tenant, relationship_type, source, target, at]
REL_TENANT = 2

OP_REL_DELETE = "rel_delete"  # [op_type, id]
