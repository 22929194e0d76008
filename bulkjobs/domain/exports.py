"""Export jobs: what a request to export asks for, and how the exported records become files.

An export reads a tenant's objects of one type, or its relationships of one type,
whose ``updated_at`` falls in a time frame, and writes them as JSON lines or CSV,
``file_split_size`` records per file. The API checks a request with ``parse_export``; the
store's exporter (``bulkjobs/store/exporter.py``) rebuilds it from the job's details, reads the
records and writes the bytes this module renders. Pure: no Kafka, HTTP or SQLite here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from bulkjobs.clock import format_time, parse_time
from bulkjobs.domain.limits import check_description
from bulkjobs.errors import BadRequest, InvalidField, check_known

OBJECTS = "objects"
RELATIONSHIPS = "relationships"
SOURCES = (OBJECTS, RELATIONSHIPS)

JSONL = "jsonl"
CSV = "csv"
FORMATS = (JSONL, CSV)
CONTENT_TYPES = {JSONL: "application/x-ndjson", CSV: "text/csv; charset=utf-8"}

DEFAULT_SPLIT = 100_000  # records per file when the request does not say

# The fields of a record as the API shows it (GET /v1/objects, /v1/relationships), in order.
OBJECT_FIELDS = ("id", "type", "external_id", "attributes", "created_at", "updated_at")
RELATIONSHIP_FIELDS = ("id", "relationship_type", "source", "target", "created_at", "updated_at")

EXPORT_FIELDS = ("title", "description", "source", "object_type", "time_frame", "params")  # of a request
_TIME_FRAME_KEYS = frozenset({"all", "date_from", "date_to"})
_PARAM_KEYS = frozenset({"format", "file_split_size", "attributes"})


def parse_instant(value: Any, field: str) -> str:
    """An ISO 8601 date or time as the view writes times (UTC, milliseconds, ``Z``), so it
    compares as text with the stored ones. A time without an offset is UTC; a date is its
    midnight. Sub-millisecond parts round up: a stored time (whole milliseconds) is at or
    after the result exactly when it is at or after ``value``."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' must be an ISO 8601 date or time", field=field)
    try:
        moment = parse_time(value.strip())
    except ValueError as exc:
        raise BadRequest(f"'{field}' is not an ISO 8601 date or time bulkjobs accepts: {exc}", field=field) from None
    if moment.microsecond % 1000:
        moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
    return format_time(moment)


@dataclass(frozen=True)
class TimeFrame:
    """The records whose ``updated_at`` is at or after ``date_from`` and before ``date_to``
    (either may be open). Half-open, so consecutive frames neither overlap nor leave a gap."""

    date_from: str | None = None
    date_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.date_from is None and self.date_to is None:
            return {"all": True}
        return {"date_from": self.date_from, "date_to": self.date_to}


def _time_frame(value: Any) -> TimeFrame:
    if value is None:
        return TimeFrame()
    date_from, date_to = _time_frame_dates(value)
    frame = TimeFrame(
        date_from=None if date_from is None else parse_instant(date_from, "time_frame.date_from"),
        date_to=None if date_to is None else parse_instant(date_to, "time_frame.date_to"),
    )
    if frame.date_from is not None and frame.date_to is not None and frame.date_from > frame.date_to:
        raise BadRequest("'time_frame.date_from' is after 'time_frame.date_to'", field="time_frame.date_from")
    return frame


def _time_frame_dates(value: Any) -> tuple[Any, Any]:
    """(date_from, date_to) as a time_frame object gives them (None where open), or a 400 when
    it is not ``{"all": true}`` or dates."""
    if not isinstance(value, dict):
        raise InvalidField("'time_frame' must be an object: {\"all\": true} or {\"date_from\", \"date_to\"}",
                           field="time_frame")
    check_known(value, _TIME_FRAME_KEYS, prefix="time_frame.")
    date_from, date_to = value.get("date_from"), value.get("date_to")
    everything = value.get("all", False)
    if not isinstance(everything, bool):
        raise InvalidField("'time_frame.all' must be true or false", field="time_frame.all")
    if everything and (date_from is not None or date_to is not None):
        raise BadRequest("a time frame is either all or dates, not both", field="time_frame")
    if not everything and date_from is None and date_to is None:
        raise BadRequest("a time frame needs all: true, date_from or date_to", field="time_frame")
    return date_from, date_to


def _required_text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{name}' is required: a non-empty string", field=name)
    return value


def _split_size(value: Any) -> int:
    if value is None:
        return DEFAULT_SPLIT
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest("'params.file_split_size' must be a positive integer (records per file)",
                         field="params.file_split_size")
    return value


def _attributes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise BadRequest("'params.attributes' must be a list of attribute names", field="params.attributes")
    return tuple(dict.fromkeys(value))  # a name asked for twice is one column


@dataclass(frozen=True)
class ExportRequest:
    title: str
    object_type: str  # the objects' type, or the relationships' relationship_type
    source: str = OBJECTS
    description: str | None = None
    time_frame: TimeFrame = field(default_factory=TimeFrame)
    format: str = JSONL
    file_split_size: int = DEFAULT_SPLIT
    attributes: tuple[str, ...] | None = None  # None: every attribute

    def details(self) -> dict[str, Any]:
        """What the job carries (``JobSubmitted.details``): the exporter rebuilds the request
        from it with ``parse_export``, and the job's body shows it."""
        return {
            "title": self.title,
            "source": self.source,
            "object_type": self.object_type,
            "time_frame": self.time_frame.to_dict(),
            "params": {"format": self.format, "file_split_size": self.file_split_size,
                       "attributes": None if self.attributes is None else list(self.attributes)},
        }


def parse_export(fields: dict[str, Any]) -> ExportRequest:
    """An export request from the fields of ``POST /v1/jobs`` (or a job's details); BadRequest
    naming the field of the first mistake."""
    title = _required_text(fields, "title")
    description = check_description(fields.get("description"))
    source = fields.get("source") or OBJECTS
    if source not in SOURCES:
        raise BadRequest(f"unknown source {source!r}: one of " + ", ".join(SOURCES), field="source")
    object_type = _required_text(fields, "object_type")
    params = fields.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InvalidField("'params' must be an object", field="params")
    check_known(params, _PARAM_KEYS, prefix="params.")
    file_format = params.get("format") or JSONL
    if file_format not in FORMATS:
        raise BadRequest(f"unknown format {file_format!r}: one of " + ", ".join(FORMATS), field="params.format")
    attributes = _attributes(params.get("attributes"))
    if attributes is not None and source == RELATIONSHIPS:
        raise BadRequest("relationships have no attributes to choose", field="params.attributes")
    return ExportRequest(
        title=title, object_type=object_type, source=source, description=description,
        time_frame=_time_frame(fields.get("time_frame")), format=file_format,
        file_split_size=_split_size(params.get("file_split_size")), attributes=attributes,
    )


def file_name(job_id: str, number: int, file_format: str) -> str:
    """The name of an export's ``number``-th file (from 1): unique across tenants, as job ids are."""
    return f"{job_id}-{number}.{file_format}"


def split(start: int, count: int, size: int) -> list[tuple[int, int, int]]:
    """Where ``count`` records, the first of which is the export's record ``start`` (from 0),
    go when each file holds ``size``: ``(file number, first, end)`` slices of those records."""
    slices = []
    position = 0
    while position < count:
        number = (start + position) // size + 1
        end = min(count, number * size - start)
        slices.append((number, position, end))
        position = end
    return slices


def _export_cell(value: Any) -> str:
    """A value in an exported CSV cell: text as it is, nothing as empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class Renderer:
    """Records (as the API shows them) as the bytes of an export's files."""

    def __init__(self, request: ExportRequest, attribute_names: list[str]) -> None:
        """``attribute_names``: the CSV's attribute columns (every attribute the exported
        objects have, unless the request chose some)."""
        self.request = request
        self.attribute_names = list(request.attributes) if request.attributes is not None else attribute_names

    def header(self) -> bytes:
        """What each file starts with: the CSV header row, nothing for JSON lines."""
        if self.request.format != CSV:
            return b""
        if self.request.source == RELATIONSHIPS:
            return _csv_rows([list(RELATIONSHIP_FIELDS)])
        fixed = [name for name in OBJECT_FIELDS if name != "attributes"]
        # An attribute named like a fixed column gets a prefix, so no two columns share a name.
        columns = [f"attributes.{name}" if name in fixed else name for name in self.attribute_names]
        return _csv_rows([[*fixed[:3], *columns, *fixed[3:]]])

    def render(self, records: list[dict[str, Any]]) -> bytes:
        if self.request.attributes is not None:
            chosen = frozenset(self.request.attributes)
            records = [{**record, "attributes": {name: value for name, value in record["attributes"].items()
                                                 if name in chosen}} for record in records]
        if self.request.format == JSONL:
            return b"".join(orjson.dumps(record) + b"\n" for record in records)
        if self.request.source == RELATIONSHIPS:
            return _csv_rows([[_export_cell(record[name]) for name in RELATIONSHIP_FIELDS] for record in records])
        return _csv_rows([
            [record["id"], record["type"], _export_cell(record["external_id"]),
             *(_export_cell(record["attributes"].get(name)) for name in self.attribute_names),
             record["created_at"], record["updated_at"]]
            for record in records
        ])


def _csv_rows(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()
