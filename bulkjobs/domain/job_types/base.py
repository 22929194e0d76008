"""What a job type is: the columns of its CSV, the operation it performs and its template.

A job type turns the typed values of one CSV row into the attributes to write, and turns an
existing object back into a template row. ``objects`` is the generic import; the others fix
the object type, the operation and the column that identifies each object (its external id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Values = dict[str, Any]  # one row's typed values, by column (api) name
Condition = tuple[str, bool, Any]  # (field, equal, value): see store.reader.matching_objects

COLUMN_TYPES = ("string", "integer", "number", "boolean", "list")


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    required: bool = False  # the header must have it, and (unless empty_ok) every row a value
    empty_ok: bool = False
    description: str = ""

    @property
    def value_required(self) -> bool:
        return self.required and not self.empty_ok

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required, "empty_ok": self.empty_ok,
                "description": self.description}


def _all_values(values: Values) -> Values:
    return values


def _object_row(obj: dict[str, Any]) -> Values:
    return {"external_id": obj["external_id"], **obj["attributes"]}


@dataclass(frozen=True)
class JobType:
    name: str
    description: str
    columns: tuple[Column, ...] = ()  # none: any header (the generic import)
    operation: str | None = None  # None: the request chooses
    object_type: str | None = None  # None: the request chooses
    key: str | None = None  # the column whose value is the object's external id; None: find_by
    attributes: Callable[[Values], Values] = _all_values  # a row's values -> the attributes to write
    template_conditions: tuple[Condition, ...] = ()  # which objects a prefilled template lists
    template_row: Callable[[dict[str, Any]], Values] = _object_row  # an object -> its template row

    @property
    def generic(self) -> bool:
        return not self.columns

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)

    def mismatch(self, names: list[str]) -> tuple[list[str], list[str]]:
        """(required columns missing, columns unknown to this type) for a header's names."""
        if self.generic:
            return [], []
        missing = [column.name for column in self.columns if column.required and column.name not in names]
        unknown = [name for name in names if self.column(name) is None]
        return missing, unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "operation": self.operation,
            "object_type": self.object_type,
            "key": self.key,
            "columns": [column.to_dict() for column in self.columns],
        }
