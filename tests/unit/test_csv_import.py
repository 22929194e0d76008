"""CSV import plans: settings, mappings, job types, row -> record, templates and filters."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from bulkjobs.domain.csv_import import (
    MAX_COLUMNS,
    MAX_DEFAULT_CHARS,
    MAX_FILTER_TERMS,
    MAX_NAME_CHARS,
    MAX_PLAN_BYTES,
    ImportSettings,
    check_file_name,
    parse_filter,
    parse_settings,
    plan_import,
    template_rows,
)
from bulkjobs.domain.csv_values import convert
from bulkjobs.domain.job_types import GENERIC, JOB_TYPES, detect
from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest


def plan(header: list[str], **fields: Any):  # type: ignore[no-untyped-def]
    return plan_import(parse_settings(fields), header)


def bad(header: list[str], **fields: Any) -> BadRequest:
    with pytest.raises(BadRequest) as err:
        plan(header, **fields)
    return err.value


def skipped(result: Any) -> str:
    assert isinstance(result, Refused) and result.skipped
    return result.reason


@pytest.mark.parametrize("text, column_type, value", [
    ("abc", "string", "abc"), (" padded ", "string", " padded "),
    ("42", "integer", 42), (" -7 ", "integer", -7),
    ("1.5", "number", 1.5), ("3", "number", 3), ("1e3", "number", 1000.0),
    (str(2**64 - 1), "integer", 2**64 - 1), (str(-(2**63)), "integer", -(2**63)),
    ("1" + "0" * 30, "number", 1e30),
    ("TRUE", "boolean", True), ("no", "boolean", False), ("1", "boolean", True),
    ("a; b;;c ", "list", ["a", "b", "c"]), ("", "list", []),
])
def test_convert(text: str, column_type: str, value: Any) -> None:
    assert convert(text, column_type) == value
    assert type(convert(text, column_type)) is type(value)


@pytest.mark.parametrize("text, column_type", [("4.2", "integer"), ("x", "number"), ("nan", "number"),
                                                ("maybe", "boolean")])
def test_convert_refuses_values_of_the_wrong_type(text: str, column_type: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        convert(text, column_type)


@pytest.mark.parametrize("text", [str(2**64), str(-(2**63) - 1), "9" * 5000])
def test_an_integer_json_cannot_carry_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        convert(text, "integer")


def test_a_long_cell_is_quoted_short_in_the_reason() -> None:
    with pytest.raises(ValueError) as err:
        convert("x" * 100_000, "integer")
    assert len(str(err.value)) < 200 and "..." in str(err.value)


def test_every_converted_row_can_be_encoded() -> None:
    planned = plan(["external_id", "n", "f"], operation="upsert", object_type="t", field_mappings=[
        {"api_name": "external_id", "index": 0}, {"api_name": "n", "index": 1, "type": "integer"},
        {"api_name": "f", "index": 2, "type": "number"}])
    for big in ("1" + "0" * 30, "-" + "9" * 25):
        orjson.dumps(planned.record(["x", big, big]))


@pytest.mark.parametrize("operation, find_by, action", [
    ("insert", None, "post"), ("update", None, "external_id_update"), ("upsert", None, "external_id_set"),
    ("delete", None, "external_id_delete"), ("update", "id", "update"), ("delete", "id", "delete"),
    ("upsert", "email", "external_id_set"),
])
def test_operation_and_find_by_choose_the_action(operation: str, find_by: str | None, action: str) -> None:
    header = ["external_id", "id", "email", "name"]
    assert plan(header, operation=operation, object_type="t", find_by=find_by).action == action


def test_records_by_external_id() -> None:
    upsert = plan(["external_id", "name"], operation="upsert", object_type="machine")
    assert upsert.record(["m-1", "press"]) == {"type": "machine", "external_id": "m-1",
                                               "attributes": {"name": "press"}}
    assert upsert.record(["m-2", ""]) == {"type": "machine", "external_id": "m-2", "attributes": {}}
    assert "'external_id' is empty" in skipped(upsert.record(["", "x"]))
    delete = plan(["external_id", "name"], operation="delete", object_type="machine")
    assert delete.record(["m-1", "ignored"]) == {"type": "machine", "external_id": "m-1"}
    insert = plan(["name"], operation="insert", object_type="machine")
    assert insert.record(["anonymous"]) == {"type": "machine", "attributes": {"name": "anonymous"}}


def test_records_by_another_field_keep_it_as_an_attribute() -> None:
    p = plan(["email", "age"], operation="upsert", object_type="person", find_by="email",
             field_mappings=[{"api_name": "email", "index": 0}, {"api_name": "age", "index": 1, "type": "integer"}])
    assert p.record(["a@x.org", "30"]) == {"type": "person", "external_id": "a@x.org",
                                           "attributes": {"email": "a@x.org", "age": 30}}


def test_records_by_id() -> None:
    update = plan(["id", "name"], operation="update", object_type="t", find_by="id")
    assert update.record(["abc", "n"]) == {"id": "abc", "attributes": {"name": "n"}}
    assert "'id' is empty" in skipped(update.record(["", "n"]))
    assert plan(["id"], operation="delete", object_type="t", find_by="id").record(["abc"]) == {"id": "abc"}


def test_bad_rows_are_skipped_with_the_reason() -> None:
    p = plan(["external_id", "n"], operation="upsert", object_type="t",
             field_mappings=[{"api_name": "external_id", "index": 0}, {"api_name": "n", "index": 1, "type": "integer"}])
    assert skipped(p.record(["a"])) == "the row has 1 columns; the header has 2"
    assert skipped(p.record(["a", "1", "2"])) == "the row has 3 columns; the header has 2"
    assert skipped(p.record(["a", "one"])) == "column 'n': 'one' is not an integer"


def test_defaults_fill_empty_cells_and_are_typed() -> None:
    p = plan(["k", "n", "s"], operation="upsert", object_type="t", find_by="k", field_mappings=[
        {"api_name": "k", "index": 0}, {"api_name": "n", "index": 1, "type": "integer", "default_value": "5"},
        {"api_name": "s", "index": 2, "default_value": "none"}])
    assert p.record(["a", " ", ""]) == {"type": "t", "external_id": "a", "attributes": {"k": "a", "n": 5, "s": "none"}}
    assert p.record(["a", "7", "x"])["attributes"] == {"k": "a", "n": 7, "s": "x"}
    assert p.details()["field_mappings"][1] == {"api_name": "n", "index": 1, "default_value": 5, "type": "integer"}


def test_a_key_that_is_a_list_is_skipped() -> None:
    p = plan(["k"], operation="upsert", object_type="t", find_by="k",
             field_mappings=[{"api_name": "k", "index": 0, "type": "list"}])
    assert "cannot be a list" in skipped(p.record(["a;b"]))


@pytest.mark.parametrize("header, job_type", [
    (["agentId", "userName", "ssoUserName"], "sso_migration"),
    (["ssoUserName", "agentId"], "sso_migration"),
    (["agentId", "userName", "agentServices"], "agent_service_association"),
    (["agentId", "agentServices"], "agent_service_association"),
    (["agentId", "userName"], "objects"),
    (["external_id", "name"], "objects"),
])
def test_the_job_type_is_detected_from_the_header(header: list[str], job_type: str) -> None:
    assert detect(header).name == job_type


def test_job_types_make_their_records() -> None:
    sso = plan(["agentId", "userName", "ssoUserName"])
    assert (sso.job_type.name, sso.operation, sso.object_type, sso.find_by) == ("sso_migration", "update", "agent",
                                                                              "agentId")
    assert sso.record(["1111", "agent1", "agent1@sso"]) == {
        "type": "agent", "external_id": "1111", "attributes": {"userName": "agent1@sso", "ssoEnabled": True}}
    assert skipped(sso.record(["1111", "agent1", ""])) == "'ssoUserName' is required but empty"
    services = plan(["agentId", "userName", "agentServices"], job_type="agent_service_association")
    assert services.record(["2222", "a2", "AgentAnswers;Transcript"])["attributes"] == {
        "agentServices": ["AgentAnswers", "Transcript"]}
    assert services.record(["2222", "a2", ""])["attributes"] == {"agentServices": []}


@pytest.mark.parametrize("header, fields, code, field", [
    (["a"], {"operation": "insert"}, "bad_request", "object_type"),
    (["a"], {"object_type": "t"}, "bad_request", "operation"),
    (["a"], {"operation": "update", "object_type": "t"}, "bad_request", "find_by"),
    (["id"], {"operation": "insert", "object_type": "t", "find_by": "id"}, "bad_request", "find_by"),
    (["a", "b"], {"operation": "insert", "object_type": "t", "field_mappings": [{"api_name": "x", "index": 2}]},
     "file_index_not_found", "field_mappings"),
    (["agentId"], {"job_type": "sso_migration"}, "header_mismatch", "job_type"),
    (["agentId", "ssoUserName"], {"job_type": "sso_migration", "operation": "delete"}, "bad_request", "operation"),
    (["agentId", "ssoUserName"], {"object_type": "user"}, "bad_request", "object_type"),
    (["agentId", "ssoUserName"], {"find_by": "external_id"}, "bad_request", "find_by"),
    (["a", " a "], {"operation": "insert", "object_type": "t"}, "invalid_header", "file"),
    (["a", ""], {"operation": "insert", "object_type": "t"}, "invalid_header", "file"),
    (["a"], {"operation": "insert", "object_type": "t", "field_mappings": [
        {"api_name": "n", "index": 0, "type": "integer", "default_value": "x"}]}, "bad_request", "field_mappings"),
])
def test_plans_refuse_settings_that_do_not_fit_the_header(header: list[str], fields: dict[str, Any], code: str,
                                                          field: str) -> None:
    err = bad(header, **fields)
    assert (err.status, err.code, err.details.get("field")) == (400, code, field)


def test_the_index_error_names_the_field_and_index() -> None:
    err = bad(["a"], operation="insert", object_type="t", field_mappings=[{"api_name": "Stage", "index": 132}])
    assert err.message.startswith("File index not found. Stage - 132")
    assert (err.details["api_name"], err.details["index"]) == ("Stage", 132)


def test_a_header_mismatch_lists_what_is_missing_and_unexpected() -> None:
    err = bad(["agentId", "email"], job_type="sso_migration")
    assert (err.details["missing"], err.details["unexpected"]) == (["ssoUserName"], ["email"])


@pytest.mark.parametrize("fields, field", [
    ({"operation": "merge"}, "operation"),
    ({"operation": 3}, "operation"),
    ({"job_type": "nope"}, "job_type"),
    ({"field_mappings": []}, "field_mappings"),
    ({"field_mappings": {"api_name": "a"}}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a"}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "", "index": 0}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a", "index": -1}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a", "index": True}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a", "index": 0, "type": "date"}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a", "index": 0, "default_value": [1]}]}, "field_mappings"),
    ({"field_mappings": [{"api_name": "a", "index": 0}, {"api_name": "a", "index": 1}]}, "field_mappings"),
    ({"description": ["x"]}, "description"),
])
def test_settings_of_the_wrong_shape_are_400(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_settings(fields)
    assert err.value.details["field"] == field


LONG_NAME = "n" * (MAX_NAME_CHARS + 1)


@pytest.mark.parametrize("fields, field, code", [
    ({"object_type": LONG_NAME}, "object_type", "too_long"),
    ({"find_by": LONG_NAME}, "find_by", "too_long"),
    ({"field_mappings": [{"api_name": LONG_NAME, "index": 0}]}, "field_mappings", "too_long"),
    ({"field_mappings": [{"api_name": "a", "index": 0, "default_value": "d" * (MAX_DEFAULT_CHARS + 1)}]},
     "field_mappings", "too_long"),
    ({"field_mappings": [{"api_name": f"c{i}", "index": i} for i in range(MAX_COLUMNS + 1)]}, "field_mappings",
     "too_many_columns"),
])
def test_settings_over_their_limits_are_400(fields: dict[str, Any], field: str, code: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_settings(fields)
    assert (err.value.status, err.value.code, err.value.details["field"]) == (400, code, field)
    assert err.value.details["limit"] in (MAX_NAME_CHARS, MAX_DEFAULT_CHARS, MAX_COLUMNS)


def test_a_file_name_over_the_limit_is_400() -> None:
    assert check_file_name("n" * MAX_NAME_CHARS) == "n" * MAX_NAME_CHARS
    with pytest.raises(BadRequest) as err:
        check_file_name(LONG_NAME)
    assert err.value.details["field"] == "file_name"


@pytest.mark.parametrize("width", [MAX_COLUMNS + 1, 35_000])
def test_a_header_of_more_columns_than_the_limit_is_400_at_once(width: int) -> None:
    started = time.perf_counter()
    err = bad([f"c{i}" for i in range(width)], operation="insert", object_type="t")
    assert (err.status, err.code, err.details["limit"]) == (400, "too_many_columns", MAX_COLUMNS)
    assert time.perf_counter() - started < 0.5


def _planning_cpu(columns: int) -> float:
    """The least CPU time (not wall time: the machine may be busy) of a few plans of a header."""
    header = [f"column-{i}" for i in range(columns)]
    times = []
    for _ in range(5):
        started = time.process_time()
        plan(header, operation="insert", object_type="t")
        times.append(time.process_time() - started)
    return max(min(times), 1e-6)


def test_a_header_of_the_most_columns_allowed_is_planned_and_checked_in_linear_time() -> None:
    header = [f"column-{i}" for i in range(MAX_COLUMNS)]
    planned = plan(header, operation="insert", object_type="t")
    assert planned.width == MAX_COLUMNS and len(orjson.dumps(planned.details())) <= MAX_PLAN_BYTES
    # Ten times the columns: about ten times the work if linear, a hundred if quadratic.
    assert _planning_cpu(MAX_COLUMNS) / _planning_cpu(MAX_COLUMNS // 10) < 40
    err = bad([*header[:-1], header[0]], operation="insert", object_type="t")
    assert err.code == "invalid_header" and err.details["columns"] == ["column-0"]


def test_header_names_over_the_limit_are_400() -> None:
    err = bad(["a", LONG_NAME], operation="insert", object_type="t")
    assert (err.code, err.details["limit"]) == ("invalid_header", MAX_NAME_CHARS)


def test_mappings_too_large_for_the_job_status_message_are_400() -> None:
    header = ["x" * MAX_NAME_CHARS + str(i) for i in range(MAX_COLUMNS)]
    header = [name[-MAX_NAME_CHARS:] for name in header]
    err = bad(header, operation="insert", object_type="t")
    assert (err.code, err.details["field"], err.details["limit"]) == ("too_many_columns", "field_mappings",
                                                                      MAX_PLAN_BYTES)


def test_empty_settings_are_unset() -> None:
    assert parse_settings({"operation": "", "description": None}) == ImportSettings()


@pytest.mark.parametrize("fields, also, field", [
    ({"operation": "insert", "other": 1}, (), "other"),
    ({"schedule": {}}, (), "schedule"),
    ({"field_mappings": [{"api_name": "a", "index": 0, "kind": "x"}]}, (), "field_mappings[0].kind"),
])
def test_a_field_that_is_no_setting_is_refused(fields: dict[str, Any], also: tuple[str, ...], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_settings(fields, also)
    assert (err.value.code, err.value.details["field"]) == ("unknown_field", field)
    assert parse_settings({"schedule": {}}, ("schedule",)) == ImportSettings()


def test_a_setting_of_the_wrong_type_is_invalid_field() -> None:
    with pytest.raises(BadRequest) as err:
        parse_settings({"object_type": 5})
    assert (err.value.code, err.value.details["field"]) == ("invalid_field", "object_type")


def test_a_filter_of_more_terms_than_the_limit_is_400() -> None:
    assert len(parse_filter(" ".join(["a:1"] * MAX_FILTER_TERMS))) == MAX_FILTER_TERMS
    with pytest.raises(BadRequest) as err:
        parse_filter(" ".join(["a:1"] * (MAX_FILTER_TERMS + 1)))
    assert (err.value.details["field"], err.value.details["limit"]) == ("q", MAX_FILTER_TERMS)


def test_parse_filter() -> None:
    assert parse_filter("peripheralId:5000  agentTeamId:12") == [("peripheralId", True, "5000"),
                                                                 ("agentTeamId", True, "12")]
    assert parse_filter(None) == [] and parse_filter("") == []
    for text in ("peripheralId", "a:", ":b", "a.b:1", "é:1"):
        with pytest.raises(BadRequest):
            parse_filter(text)


def test_templates() -> None:
    agents = [{"external_id": "1", "attributes": {"userName": "a", "agentServices": ["X", "Y"], "ssoEnabled": False}},
              {"external_id": "2", "attributes": {"userName": "b"}}]
    assert template_rows(JOB_TYPES["sso_migration"], agents) == [
        ["agentId", "userName", "ssoUserName"], ["1", "a", ""], ["2", "b", ""]]
    assert template_rows(JOB_TYPES["agent_service_association"], agents) == [
        ["agentId", "userName", "agentServices"], ["1", "a", "X;Y"], ["2", "b", ""]]
    assert template_rows(GENERIC, agents) == [
        ["external_id", "agentServices", "ssoEnabled", "userName"], ["1", "X;Y", "false", "a"], ["2", "", "", "b"]]
    assert template_rows(GENERIC, []) == [["external_id"]]
