"""Turning a CSV job's rows into records: its settings, field mappings and typed values (each
cell converted by ``domain.csv_values``).

``plan_import`` checks a CSV job's settings against the file's header once (each mistake is a
400 naming the field) and returns an ``ImportPlan``. The plan turns each row into the record
that the job's resources action applies, or into a ``Refused`` row, counted as skipped, when
the row itself is wrong (its column count, a value of the wrong type, a required value
missing).

An object's external id is its unique key. ``find_by`` names the field holding it
(``external_id`` by default; another field's value then serves as the external id and is
written as an attribute too), or is ``id`` to find objects by their bulkjobs id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from bulkjobs.domain.csv_values import convert
from bulkjobs.domain.job_types import (
    COLUMN_TYPES,
    JOB_TYPES,
    Condition,
    JobType,
    Values,
    detect,
)
from bulkjobs.domain.limits import check_description
from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest, InvalidField, check_known

OPERATIONS = ("insert", "update", "upsert", "delete")
SETTINGS = ("operation", "object_type", "job_type", "find_by", "field_mappings", "description",
            "character_encoding")

# (operation, finding by id?) -> the resources action that applies each record.
_ACTIONS = {
    ("insert", False): "post",
    ("update", False): "external_id_update",
    ("update", True): "update",
    ("upsert", False): "external_id_set",
    ("delete", False): "external_id_delete",
    ("delete", True): "delete",
}

# Limits of a CSV job's settings, checked at the door. The plan (its field mappings with their
# names and default values) travels in the job's details, in JobSubmitted and in every JobStatus,
# whose producers refuse messages over 1,000,000 bytes; MAX_PLAN_BYTES keeps it well under that
# beside the description and the job's bookkeeping.
MAX_COLUMNS = 1000  # columns of a file's header, and field mappings
MAX_NAME_CHARS = 255  # a column's name (api_name or header), object_type, find_by, file_name
MAX_DEFAULT_CHARS = 1000  # a default_value
MAX_PLAN_BYTES = 256 * 1024  # the plan as JSON (the job's details)
MAX_FILTER_TERMS = 50  # of a template's filter: each is a condition of one SQL query

@dataclass(frozen=True)
class FieldMapping:
    """Column ``index`` (0-based) of the file feeds the field ``api_name``; ``default_value``
    fills an empty cell; ``type`` converts the text (string unless the job type says otherwise)."""

    api_name: str
    index: int
    default_value: Any = None
    type: str | None = None


@dataclass(frozen=True)
class ImportSettings:
    """A CSV job's settings as the request gave them (from a query string, a form or JSON)."""

    operation: str | None = None
    object_type: str | None = None
    job_type: str | None = None
    find_by: str | None = None
    field_mappings: tuple[FieldMapping, ...] | None = None
    description: str | None = None
    character_encoding: str | None = None


def _too_long(what: str, field: str, limit: int) -> BadRequest:
    return BadRequest(f"{what} is longer than the limit of {limit} characters", field=field, code="too_long",
                      limit=limit)


def _optional_str(fields: dict[str, Any], name: str, max_chars: int | None = None) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidField(f"'{name}' must be a string", field=name)
    if max_chars is not None and len(value) > max_chars:
        raise _too_long(f"'{name}'", name, max_chars)
    return value


def check_file_name(name: str | None) -> str | None:
    """The file's name as the client gave it; 400 when longer than the limit."""
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise _too_long("the file's name", "file_name", MAX_NAME_CHARS)
    return name


def _mapping(entry: Any, position: int) -> FieldMapping:
    where = f"field_mappings[{position}]"
    if not isinstance(entry, dict):
        raise InvalidField(f"{where} must be an object with api_name and index", field="field_mappings")
    check_known(entry, ("api_name", "index", "default_value", "type"), prefix=f"{where}.")
    api_name, index = entry.get("api_name"), entry.get("index")
    if not isinstance(api_name, str) or not api_name:
        raise BadRequest(f"{where}.api_name must be a non-empty string", field="field_mappings")
    if len(api_name) > MAX_NAME_CHARS:
        raise _too_long(f"{where}.api_name", "field_mappings", MAX_NAME_CHARS)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise BadRequest(f"{where}.index must be a column index (an integer >= 0)", field="field_mappings")
    column_type = entry.get("type")
    if column_type is not None and column_type not in COLUMN_TYPES:
        raise BadRequest(f"{where}.type must be one of " + ", ".join(COLUMN_TYPES), field="field_mappings")
    default = entry.get("default_value")
    if isinstance(default, (dict, list)):
        raise BadRequest(f"{where}.default_value must be a string, number or boolean", field="field_mappings")
    if isinstance(default, str) and len(default) > MAX_DEFAULT_CHARS:
        raise _too_long(f"{where}.default_value", "field_mappings", MAX_DEFAULT_CHARS)
    return FieldMapping(api_name, index, default, column_type)


def parse_settings(fields: dict[str, Any], also: Collection[str] = ()) -> ImportSettings:
    """Check the types of a CSV job's settings; a 400 for the first one that is wrong, or for
    a field that is neither a setting nor one of ``also`` (what the request's form takes
    beside the settings, such as its schedule)."""
    check_known(fields, (*SETTINGS, *also))
    operation = _optional_str(fields, "operation")
    if operation is not None and operation not in OPERATIONS:
        raise BadRequest(f"unknown operation {operation!r}: one of " + ", ".join(OPERATIONS),
                         field="operation", code="unknown_operation")
    job_type = _optional_str(fields, "job_type")
    if job_type is not None and job_type not in JOB_TYPES:
        raise BadRequest(f"unknown job type {job_type!r}: one of " + ", ".join(JOB_TYPES),
                         field="job_type", code="unknown_job_type")
    mappings = fields.get("field_mappings")
    if mappings is not None:
        if not isinstance(mappings, list) or not mappings:
            raise BadRequest("'field_mappings' must be a non-empty list of {api_name, index, default_value}",
                             field="field_mappings")
        if len(mappings) > MAX_COLUMNS:
            raise BadRequest(f"'field_mappings' has {len(mappings)} entries: at most {MAX_COLUMNS}",
                             field="field_mappings", code="too_many_columns", limit=MAX_COLUMNS)
        mappings = tuple(_mapping(entry, i) for i, entry in enumerate(mappings))
        names = [mapping.api_name for mapping in mappings]
        if len(set(names)) < len(names):
            raise BadRequest("'field_mappings' names a field twice", field="field_mappings")
    return ImportSettings(
        operation=operation,
        object_type=_optional_str(fields, "object_type", MAX_NAME_CHARS),
        job_type=job_type,
        find_by=_optional_str(fields, "find_by", MAX_NAME_CHARS),
        field_mappings=mappings,
        description=check_description(_optional_str(fields, "description")),
        character_encoding=_optional_str(fields, "character_encoding"),
    )


@dataclass(frozen=True)
class ImportPlan:
    job_type: JobType
    operation: str
    object_type: str
    find_by: str
    mappings: tuple[FieldMapping, ...]
    width: int  # columns in the header: every row must have as many
    types: tuple[str, ...]  # the type each mapping converts its cells to, found once for every row

    @property
    def action(self) -> str:
        return _ACTIONS[(self.operation, self.find_by == "id")]

    def details(self) -> dict[str, Any]:
        """What a CSV job shows of its plan (the job's ``details``, beside its ``file``)."""
        return {"job_type": self.job_type.name, "operation": self.operation, "object_type": self.object_type,
                "find_by": self.find_by, "field_mappings": [asdict(m) for m in self.mappings]}

    def record(self, row: list[str]) -> dict[str, Any] | Refused:
        """The record for one data row, or the row refused (skipped) with the reason."""
        if len(row) != self.width:
            return Refused(f"the row has {len(row)} columns; the header has {self.width}", skipped=True)
        job_type = self.job_type
        values: Values = {}
        for mapping, column_type in zip(self.mappings, self.types, strict=True):
            cell = row[mapping.index]
            if not cell.strip():
                if mapping.default_value is not None:
                    values[mapping.api_name] = mapping.default_value
                continue
            try:
                values[mapping.api_name] = convert(cell, column_type)
            except ValueError as exc:
                return Refused(f"column '{mapping.api_name}': {exc}", skipped=True)
        for column in job_type.columns:
            if column.value_required and column.name not in values:
                return Refused(f"'{column.name}' is required but empty", skipped=True)
        return self._record(values)

    def _record(self, values: Values) -> dict[str, Any] | Refused:
        key = self.find_by
        if key == "id":
            object_id = values.pop("id", None)
            if object_id is None:
                return Refused("'id' is empty: it identifies the object", skipped=True)
            if self.operation == "delete":
                return {"id": str(object_id)}
            return {"id": str(object_id), "attributes": self.job_type.attributes(values)}
        external_id = values.pop(key, None) if key == "external_id" else values.get(key)
        if isinstance(external_id, list):
            return Refused(f"'{key}' identifies the object: it cannot be a list", skipped=True)
        record: dict[str, Any] = {"type": self.object_type}
        if external_id is not None:
            record["external_id"] = str(external_id)
        elif self.operation != "insert":
            return Refused(f"'{key}' is empty: it identifies the object", skipped=True)
        if self.operation != "delete":
            record["attributes"] = self.job_type.attributes(values)
        return record


def _header_mappings(header: list[str]) -> tuple[FieldMapping, ...]:
    names = [name.strip() for name in header]
    for position, name in enumerate(names):
        if not name:
            raise BadRequest(f"column {position} of the header has no name", field="file", code="invalid_header")
        if len(name) > MAX_NAME_CHARS:
            raise BadRequest(f"column {position} of the header is named with more than {MAX_NAME_CHARS} characters",
                             field="file", code="invalid_header", limit=MAX_NAME_CHARS)
    duplicates = sorted(name for name, times in Counter(names).items() if times > 1)
    if duplicates:
        raise BadRequest("the header names a column twice: " + ", ".join(duplicates), field="file",
                         code="invalid_header", columns=duplicates)
    return tuple(FieldMapping(name, position) for position, name in enumerate(names))


def _check_mappings(mappings: tuple[FieldMapping, ...], width: int) -> None:
    for mapping in mappings:
        if mapping.index >= width:
            raise BadRequest(
                f"File index not found. {mapping.api_name} - {mapping.index}: the file has {width} columns",
                field="field_mappings", code="file_index_not_found", api_name=mapping.api_name, index=mapping.index,
            )


def _column_type(job_type: JobType, mapping: FieldMapping) -> str:
    """The type a mapping's cells convert to: its own, else its job type column's, else string."""
    column = job_type.column(mapping.api_name)
    return mapping.type or (column.type if column else "string")


def _check_defaults(job_type: JobType, mappings: tuple[FieldMapping, ...]) -> tuple[FieldMapping, ...]:
    """Mappings with their string default values converted to their column's type."""
    checked = []
    for mapping in mappings:
        column_type = _column_type(job_type, mapping)
        default = mapping.default_value
        if isinstance(default, str) and default.strip() and column_type != "string":
            try:
                default = convert(default, column_type)
            except ValueError as exc:
                raise BadRequest(f"default_value of {mapping.api_name!r}: {exc}", field="field_mappings") from None
        checked.append(FieldMapping(mapping.api_name, mapping.index, default, mapping.type))
    return tuple(checked)


def _fixed(settings: ImportSettings, job_type: JobType, name: str, fixed: str | None) -> None:
    given = getattr(settings, name)
    if fixed is not None and given is not None and given != fixed:
        raise BadRequest(f"job type {job_type.name!r} has {name} {fixed!r}, not {given!r}", field=name)


def plan_import(settings: ImportSettings, header: list[str]) -> ImportPlan:
    """Check the settings against the header (the file's first row) and plan the import."""
    width = len(header)
    if width > MAX_COLUMNS:
        raise BadRequest(f"the file has {width} columns: at most {MAX_COLUMNS}", field="file",
                         code="too_many_columns", limit=MAX_COLUMNS)
    if settings.field_mappings is not None:
        _check_mappings(settings.field_mappings, width)
        mappings = settings.field_mappings
    else:
        mappings = _header_mappings(header)
    names = [mapping.api_name for mapping in mappings]
    job_type = _job_type(settings, names)
    operation, object_type, find_by = _target(settings, job_type, names)
    mappings = _check_defaults(job_type, mappings)
    plan = ImportPlan(job_type, operation, object_type, find_by, mappings, width,
                      tuple(_column_type(job_type, mapping) for mapping in mappings))
    size = len(orjson.dumps(plan.details()))
    if size > MAX_PLAN_BYTES:
        raise BadRequest(f"the columns and their mappings take {size} bytes as JSON: at most {MAX_PLAN_BYTES} "
                         "(fewer columns, shorter names or default values)", field="field_mappings",
                         code="too_many_columns", limit=MAX_PLAN_BYTES)
    return plan


def _job_type(settings: ImportSettings, names: list[str]) -> JobType:
    """The job type the settings name, which the columns must match, else the one they match."""
    if settings.job_type is None:
        return detect(names)
    job_type = JOB_TYPES[settings.job_type]
    missing, unknown = job_type.mismatch(names)
    if missing or unknown:
        raise BadRequest(
            f"the header does not match job type {job_type.name!r}: columns "
            + ", ".join(job_type.column_names),
            field="job_type", code="header_mismatch", missing=missing, unexpected=unknown,
        )
    return job_type


def _target(settings: ImportSettings, job_type: JobType, names: list[str]) -> tuple[str, str, str]:
    """(operation, object_type, find_by): the job type's where it fixes them, else the settings'."""
    _fixed(settings, job_type, "operation", job_type.operation)
    _fixed(settings, job_type, "object_type", job_type.object_type)
    _fixed(settings, job_type, "find_by", job_type.key)
    operation = job_type.operation or settings.operation
    if operation is None:
        raise BadRequest("'operation' is required: one of " + ", ".join(OPERATIONS), field="operation")
    object_type = job_type.object_type or settings.object_type
    if object_type is None:
        detail = "" if settings.job_type else " (the header matches no other job type)"
        raise BadRequest(f"'object_type' is required for job type {job_type.name!r}{detail}", field="object_type")
    find_by = job_type.key or settings.find_by or "external_id"
    if find_by == "id" and operation in ("insert", "upsert"):
        raise BadRequest(f"find_by 'id' cannot {operation}: ids are given to new objects, "
                         "so find them by external_id", field="find_by")
    if operation != "insert" and find_by not in names:
        raise BadRequest(f"no column feeds {find_by!r}, which identifies the objects to {operation} (find_by)",
                         field="find_by")
    return operation, object_type, find_by


def parse_filter(text: str | None) -> list[Condition]:
    """A template filter ``field:value field2:value2`` (ANDed) as conditions; 400 if malformed."""
    terms = (text or "").split()
    if len(terms) > MAX_FILTER_TERMS:
        raise BadRequest(f"the filter has {len(terms)} terms: at most {MAX_FILTER_TERMS}", field="q",
                         limit=MAX_FILTER_TERMS)
    conditions: list[Condition] = []
    for term in terms:
        field, sep, value = term.partition(":")
        if not sep or not field or not value or not (field.replace("_", "").isalnum() and field.isascii()):
            raise BadRequest(f"filter term {term!r} is not field:value (a field is letters, digits and _)",
                             field="q")
        conditions.append((field, True, value))
    return conditions


def _template_cell(value: Any) -> str:
    """A value in a CSV template's cell: nothing as empty, booleans as true/false, a list's items
    joined by ";", an object as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(_template_cell(item) for item in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def template_rows(job_type: JobType, objects: list[dict[str, Any]]) -> list[list[str]]:
    """A job type's CSV template: its header, then a row per object (for the generic type, the
    header is external_id and the attributes the objects have)."""
    rows = [job_type.template_row(obj) for obj in objects]
    if job_type.generic:
        header = ["external_id", *sorted({name for row in rows for name in row} - {"external_id"})]
    else:
        header = job_type.column_names
    return [header, *([_template_cell(row.get(name)) for name in header] for row in rows)]
