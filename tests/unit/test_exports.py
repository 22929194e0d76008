"""Export requests (parse_export, details), time frames, file naming and splitting, rendering."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from bulkjobs.domain.exports import (
    CSV,
    DEFAULT_SPLIT,
    JSONL,
    OBJECTS,
    RELATIONSHIPS,
    ExportRequest,
    Renderer,
    TimeFrame,
    file_name,
    parse_export,
    parse_instant,
    split,
)
from bulkjobs.errors import BadRequest

T0, T1 = "2026-11-24T05:00:00.000Z", "2026-11-24T06:00:00.000Z"


def fields(**changes: Any) -> dict[str, Any]:
    return {"kind": "export", "title": "machines", "object_type": "machine", **changes}


def bad(**changes: Any) -> BadRequest:
    with pytest.raises(BadRequest) as err:
        parse_export(fields(**changes))
    return err.value


def test_a_minimal_request_exports_every_object_as_json_lines() -> None:
    request = parse_export(fields())

    assert request == ExportRequest(title="machines", object_type="machine")
    assert request.details() == {
        "title": "machines", "source": OBJECTS, "object_type": "machine", "time_frame": {"all": True},
        "params": {"format": JSONL, "file_split_size": DEFAULT_SPLIT, "attributes": None},
    }


def test_a_full_request_and_its_details_give_the_same_request() -> None:
    request = parse_export(fields(
        description="nightly", time_frame={"date_from": "2026-11-24T05:00:00Z", "date_to": "2026-11-24T07:00:00+01:00"},
        params={"format": "csv", "file_split_size": 500, "attributes": ["name", "rpm", "name"]},
    ))

    assert request.description == "nightly"
    assert request.time_frame == TimeFrame(T0, T1)
    assert (request.format, request.file_split_size, request.attributes) == (CSV, 500, ("name", "rpm"))
    assert parse_export(orjson.loads(orjson.dumps(request.details()))) == ExportRequest(
        title="machines", object_type="machine", time_frame=TimeFrame(T0, T1), format=CSV, file_split_size=500,
        attributes=("name", "rpm"))


@pytest.mark.parametrize("changes, field", [
    ({"title": None}, "title"),
    ({"title": "  "}, "title"),
    ({"title": 7}, "title"),
    ({"object_type": None}, "object_type"),
    ({"object_type": ""}, "object_type"),
    ({"description": 3}, "description"),
    ({"source": "results"}, "source"),
    ({"params": []}, "params"),
    ({"params": {"format": "xml"}}, "params.format"),
    ({"params": {"file_split_size": 0}}, "params.file_split_size"),
    ({"params": {"file_split_size": -5}}, "params.file_split_size"),
    ({"params": {"file_split_size": 2.5}}, "params.file_split_size"),
    ({"params": {"file_split_size": "100"}}, "params.file_split_size"),
    ({"params": {"file_split_size": True}}, "params.file_split_size"),
    ({"params": {"attributes": "name"}}, "params.attributes"),
    ({"params": {"attributes": ["name", 3]}}, "params.attributes"),
    ({"params": {"attributes": [""]}}, "params.attributes"),
    ({"params": {"fileSplitSize": 10}}, "params.fileSplitSize"),
    ({"source": "relationships", "params": {"attributes": ["name"]}}, "params.attributes"),
    ({"time_frame": "all"}, "time_frame"),
    ({"time_frame": {}}, "time_frame"),
    ({"time_frame": {"all": False}}, "time_frame"),
    ({"time_frame": {"all": "yes"}}, "time_frame.all"),
    ({"time_frame": {"all": True, "date_from": T0}}, "time_frame"),
    ({"time_frame": {"dateFrom": T0}}, "time_frame.dateFrom"),
    ({"time_frame": {"date_from": "yesterday"}}, "time_frame.date_from"),
    ({"time_frame": {"date_to": "2026-13-01"}}, "time_frame.date_to"),
    ({"time_frame": {"date_to": 1700000000}}, "time_frame.date_to"),
    ({"time_frame": {"date_from": T1, "date_to": T0}}, "time_frame.date_from"),
])
def test_each_mistake_names_its_field(changes: dict[str, Any], field: str) -> None:
    error = bad(**changes)

    assert error.status == 400 and error.details["field"] == field


@pytest.mark.parametrize("frame, expected", [
    (None, TimeFrame()),
    ({"all": True}, TimeFrame()),
    ({"date_from": T0}, TimeFrame(T0, None)),
    ({"date_to": T1}, TimeFrame(None, T1)),
    ({"all": False, "date_from": T0, "date_to": T0}, TimeFrame(T0, T0)),
])
def test_time_frames(frame: dict[str, Any] | None, expected: TimeFrame) -> None:
    assert parse_export(fields(time_frame=frame)).time_frame == expected


@pytest.mark.parametrize("text, instant", [
    ("2026-11-24T05:00:00Z", T0),
    ("2026-11-24T05:00:00", T0),  # no offset: UTC
    ("2026-11-24T08:00:00+03:00", T0),
    ("2026-11-24", "2026-11-24T00:00:00.000Z"),
    ("2026-11-24T05:00:00.123Z", "2026-11-24T05:00:00.123Z"),
    ("2026-11-24T05:00:00.1231Z", "2026-11-24T05:00:00.124Z"),  # up: the stored .123 is before it
    ("2026-11-24T23:59:59.9999Z", "2026-11-25T00:00:00.000Z"),
])
def test_instants_are_written_as_the_view_writes_times(text: str, instant: str) -> None:
    assert parse_instant(text, "x") == instant


def test_time_frame_details() -> None:
    assert TimeFrame().to_dict() == {"all": True}
    assert TimeFrame(T0, None).to_dict() == {"date_from": T0, "date_to": None}


def test_file_names_carry_the_job_and_the_number() -> None:
    assert file_name("abc123", 1, JSONL) == "abc123-1.jsonl"
    assert file_name("abc123", 12, CSV) == "abc123-12.csv"


@pytest.mark.parametrize("start, count, size, slices", [
    (0, 0, 10, []),
    (0, 5, 10, [(1, 0, 5)]),
    (0, 10, 10, [(1, 0, 10)]),
    (0, 25, 10, [(1, 0, 10), (2, 10, 20), (3, 20, 25)]),
    (5, 10, 10, [(1, 0, 5), (2, 5, 10)]),
    (10, 3, 10, [(2, 0, 3)]),
    (7, 5, 1, [(8, 0, 1), (9, 1, 2), (10, 2, 3), (11, 3, 4), (12, 4, 5)]),
])
def test_split(start: int, count: int, size: int, slices: list[tuple[int, int, int]]) -> None:
    assert split(start, count, size) == slices


def test_pages_split_into_files_of_the_split_size() -> None:
    written, per_file = 0, {}
    for page in (7, 7, 7, 2):
        for number, first, end in split(written, page, 5):
            per_file[number] = per_file.get(number, 0) + end - first
        written += page

    assert per_file == {1: 5, 2: 5, 3: 5, 4: 5, 5: 3}


OBJECT = {"id": "a1", "type": "machine", "external_id": "m-1",
          "attributes": {"name": "press, big", "rpm": 900, "on": True, "tags": ["x"], "spec": {"w": 1.5}, "none": None},
          "created_at": T0, "updated_at": T1}
BARE = {"id": "a2", "type": "machine", "external_id": None, "attributes": {}, "created_at": T0, "updated_at": T0}
RELATIONSHIP = {"id": "r1", "relationship_type": "feeds", "source": "a1", "target": "a2", "created_at": T0,
                "updated_at": T1}


def request(**changes: Any) -> ExportRequest:
    return parse_export(fields(**changes))


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def test_json_lines_are_the_records_as_the_api_shows_them() -> None:
    renderer = Renderer(request(), [])

    assert renderer.header() == b""
    lines = renderer.render([OBJECT, BARE]).splitlines()
    assert [orjson.loads(line) for line in lines] == [OBJECT, BARE]


def test_json_lines_keep_only_the_chosen_attributes() -> None:
    renderer = Renderer(request(params={"attributes": ["rpm", "missing", "name"]}), [])

    [line] = renderer.render([OBJECT]).splitlines()
    assert orjson.loads(line) == {**OBJECT, "attributes": {"name": "press, big", "rpm": 900}}


def test_csv_of_objects_has_a_column_per_attribute() -> None:
    renderer = Renderer(request(params={"format": "csv"}), ["name", "none", "on", "rpm", "spec", "tags"])

    rows = csv_rows(renderer.header() + renderer.render([OBJECT, BARE]))
    assert rows == [
        ["id", "type", "external_id", "name", "none", "on", "rpm", "spec", "tags", "created_at", "updated_at"],
        ["a1", "machine", "m-1", "press, big", "", "true", "900", '{"w":1.5}', '["x"]', T0, T1],
        ["a2", "machine", "", "", "", "", "", "", "", T0, T0],
    ]


def test_csv_columns_are_the_chosen_attributes_in_the_order_asked() -> None:
    renderer = Renderer(request(params={"format": "csv", "attributes": ["rpm", "name"]}), ["ignored"])

    rows = csv_rows(renderer.header() + renderer.render([OBJECT]))
    assert rows == [["id", "type", "external_id", "rpm", "name", "created_at", "updated_at"],
                    ["a1", "machine", "m-1", "900", "press, big", T0, T1]]


def test_an_attribute_named_like_a_fixed_column_gets_a_prefix() -> None:
    renderer = Renderer(request(params={"format": "csv"}), ["id", "name"])

    assert csv_rows(renderer.header()) == [["id", "type", "external_id", "attributes.id", "name", "created_at",
                                            "updated_at"]]


@pytest.mark.parametrize("file_format", [JSONL, CSV])
def test_relationships(file_format: str) -> None:
    renderer = Renderer(request(source=RELATIONSHIPS, object_type="feeds", params={"format": file_format}), [])

    data = renderer.header() + renderer.render([RELATIONSHIP])
    if file_format == JSONL:
        assert orjson.loads(data) == RELATIONSHIP
    else:
        assert csv_rows(data) == [list(RELATIONSHIP), list(RELATIONSHIP.values())]
