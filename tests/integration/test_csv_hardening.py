"""CSV jobs against hostile and careless input: every mistake is a 4xx in the JSON error shape,
answered quickly, and whatever is accepted finishes; results.csv keeps every outcome under its
headers; file filters and schedules refuse times that cannot be represented."""

from __future__ import annotations

import base64
import time
import urllib.parse
from typing import Any

import pytest

from tests.integration.test_csv import error_of, objects_of, parse_csv, run_csv, unique
from tests.support import Client, Response, Stack

SETTINGS = {"operation": "upsert", "object_type": "t"}


def refused(resp: Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, (resp.status, resp.body)
    error = error_of(resp)
    assert error["code"] == code and error["message"], error
    return error


def jobs_total(api: Client) -> int:
    return api.get("/v1/jobs?limit=1").body["total"]


# --- costly files -------------------------------------------------------------------------------------


def test_an_unclosed_quote_before_200000_lines_is_refused_in_linear_time(api: Client) -> None:
    started = time.monotonic()
    resp = api.post_csv(b'external_id,name\n"x' + b",y\n" * 200_000, **SETTINGS)
    refused(resp, 400, "not_csv")
    assert time.monotonic() - started < 3  # 40 s when the quotes were recounted for every line break


def test_a_row_longer_than_the_limit_is_413(api: Client) -> None:
    resp = api.post_csv(b'external_id,name\n"x' + b",y\n" * 600_000, **SETTINGS)  # 2.4 MB in one quoted field
    assert refused(resp, 413, "row_too_long")["limit"] == 1024 * 1024


def test_a_header_of_35000_columns_is_400_at_the_door(api: Client) -> None:
    header = ",".join(f"c{i}" for i in range(35_000)).encode()
    before = jobs_total(api)
    started = time.monotonic()
    resp = api.post_csv(header + b"\n" + b"1," * 34_999 + b"1\n", **SETTINGS)
    assert refused(resp, 400, "too_many_columns")["limit"] == 1000
    assert time.monotonic() - started < 3  # 35 s, then a 503, when duplicates were counted name by name
    assert jobs_total(api) == before


def test_a_csv_of_the_most_columns_allowed_finishes(api: Client) -> None:
    kind = unique("wide")
    header = ",".join(["external_id", *(f"column-{i}" for i in range(999))])
    rows = [",".join([f"w-{row}", *(str(row * i) for i in range(999))]) for row in range(3)]
    job = run_csv(api, "\n".join([header, *rows, ""]).encode(), operation="upsert", object_type=kind)
    assert job["status"] == "succeeded" and job["counts"]["created"] == 3
    assert len(job["field_mappings"]) == 1000
    assert objects_of(api, kind)["w-2"]["column-998"] == str(2 * 998)


def test_numbers_beyond_64_bits_are_skipped_rows_not_a_500(api: Client) -> None:
    kind = unique("big")
    big = "1" + "0" * 30
    job = run_csv(api, f"external_id,n,f\nb-1,{big},{big}\nb-2,7,{big}\n".encode(), operation="upsert",
                  object_type=kind, field_mappings=[{"api_name": "external_id", "index": 0},
                                                    {"api_name": "n", "index": 1, "type": "integer"},
                                                    {"api_name": "f", "index": 2, "type": "number"}])
    assert job["status"] == "partially_succeeded" and job["counts"]["skipped"] == 1
    assert "out of range" in api.results(job["id"])[0]["errors"][0]["detail"]
    assert objects_of(api, kind) == {"b-2": {"n": 7, "f": 1e30}}


@pytest.mark.parametrize("settings, field, code", [
    pytest.param({"object_type": "t" * 256}, "object_type", "too_long", id="object_type"),
    pytest.param({"file_name": "f" * 256}, "file_name", "too_long", id="file_name"),
    pytest.param({"find_by": "k" * 256}, "find_by", "too_long", id="find_by"),
    pytest.param({"field_mappings": [{"api_name": "external_id", "index": 0, "default_value": "d" * 1001}]},
                 "field_mappings", "too_long", id="default_value"),
    pytest.param({"field_mappings": [{"api_name": "n" * 256, "index": 0}]}, "field_mappings", "too_long",
                 id="api_name"),
    pytest.param({"field_mappings": [{"api_name": f"c{i}", "index": 0} for i in range(1001)]}, "field_mappings",
                 "too_many_columns", id="mappings"),
    pytest.param({"character_encoding": "u" * 65}, "character_encoding", "unknown_encoding", id="encoding"),
])
def test_csv_settings_over_their_limits_are_400(api: Client, settings: dict[str, Any], field: str,
                                                code: str) -> None:
    before = jobs_total(api)
    resp = api.post("/v1/jobs", json_body={**SETTINGS, **settings, "file_content": "external_id\nx\n"})
    assert refused(resp, 400, code)["field"] == field
    assert jobs_total(api) == before


def test_column_names_too_long_for_the_job_status_are_400(api: Client) -> None:
    header = ",".join(f"{i:04d}" + "n" * 250 for i in range(1000))  # 1,000 names of 254 characters
    resp = api.post_csv(f"{header}\n{',' * 999}\n".encode(), operation="insert", object_type="t")
    assert refused(resp, 400, "too_many_columns")["field"] == "field_mappings"


# --- encodings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["base64", "zlib", "rot13", "punycode", "hex", "bz2", "uu", "quopri",
                                      "idna"])
def test_a_codec_that_is_not_a_text_encoding_is_400(api: Client, encoding: str) -> None:
    resp = api.post_csv(b"external_id\nx\n", **SETTINGS, character_encoding=encoding)
    assert refused(resp, 400, "unknown_encoding")["field"] == "character_encoding"


def test_utf16_without_a_byte_order_mark_is_400(api: Client) -> None:
    resp = api.post_csv("external_id\nx\n".encode("utf-16-le"), **SETTINGS, character_encoding="utf-16")
    assert refused(resp, 400, "invalid_encoding")["field"] == "character_encoding"


# --- malformed multipart --------------------------------------------------------------------------------

FILE_PART = b'Content-Disposition: form-data; name="file"; filename="f.csv"\r\n\r\nexternal_id\r\nx\r\n'
JOB_PART = b'Content-Disposition: form-data; name="job"\r\n\r\n{"operation": "upsert", "object_type": "t"}\r\n'


def multipart(*parts: bytes, boundary: str = "b0und") -> bytes:
    delimiter = b"--" + boundary.encode()
    return b"".join(delimiter + b"\r\n" + part for part in parts) + delimiter + b"--\r\n"


@pytest.mark.parametrize("content_type, body", [
    pytest.param("multipart/form-data", multipart(JOB_PART, FILE_PART), id="no-boundary"),
    pytest.param("multipart/form-data; boundary=other", multipart(JOB_PART, FILE_PART), id="wrong-boundary"),
    pytest.param("multipart/form-data; boundary=" + "x" * 71, b"--x\r\n", id="boundary-too-long"),
    pytest.param("multipart/form-data; boundary=b0und", b"--b0und\r\n" + JOB_PART + b"--b0und\r\n" + FILE_PART,
                 id="unclosed-boundary"),
    pytest.param("multipart/form-data; boundary=b0und", b"\x00\xff garbage" * 1000, id="garbage"),
    pytest.param("multipart/form-data; boundary=b0und", b"--b0und\r\nX-Big: " + b"h" * 100_000 + b"\r\n\r\nx\r\n"
                 + b"--b0und--\r\n", id="huge-part-header"),
    pytest.param("multipart/form-data; boundary=b0und", multipart(
        b'Content-Disposition: form-data; name="operation"\r\nContent-Type: text/plain; charset=klingon\r\n\r\n'
        b"upsert\r\n", FILE_PART), id="unknown-charset"),
    pytest.param("multipart/form-data; boundary=b0und", multipart(
        b'Content-Disposition: form-data; name="operation"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
        b"\xff\xfe\r\n", FILE_PART), id="undecodable-setting"),
    pytest.param("multipart/form-data; boundary=b0und", multipart(
        b'Content-Disposition: form-data; name="job"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64=\r\n',
        FILE_PART), id="bad-base64-setting"),
    pytest.param("multipart/form-data; boundary=b0und", multipart(
        JOB_PART, b'Content-Disposition: form-data; name="file"; filename="f.csv"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\nZXh0ZXJuYWxfaWQKeAo!\r\n"), id="bad-base64-file"),
    pytest.param("multipart/form-data; boundary=b0und", multipart(
        JOB_PART, b'Content-Disposition: form-data; name="file"; filename="f.csv"\r\n'
                  b"Content-Transfer-Encoding: x-unknown\r\n\r\nexternal_id\r\n"), id="unknown-transfer-encoding"),
])
def test_a_malformed_multipart_body_is_400(api: Client, content_type: str, body: bytes) -> None:
    before = jobs_total(api)
    resp = api.post("/v1/jobs", data=body, content_type=content_type)
    assert resp.status == 400, (resp.status, resp.body)
    assert error_of(resp)["code"] in ("invalid_multipart", "invalid_json")
    assert jobs_total(api) == before


def test_two_file_parts_are_400(api: Client) -> None:
    resp = api.post("/v1/jobs", data=multipart(JOB_PART, FILE_PART, FILE_PART),
                    content_type="multipart/form-data; boundary=b0und")
    assert refused(resp, 400, "bad_request")["field"] == "file"


def test_a_settings_part_over_its_limit_is_413(api: Client) -> None:
    huge = b'Content-Disposition: form-data; name="description"\r\n\r\n' + b"d" * (5 * 1024 * 1024) + b"\r\n"
    resp = api.post("/v1/jobs", data=multipart(JOB_PART, huge, FILE_PART),
                    content_type="multipart/form-data; boundary=b0und")
    assert refused(resp, 413, "too_large")["limit"] == 4 * 1024 * 1024


def test_a_file_part_in_base64_is_decoded(api: Client) -> None:
    kind = unique("b64")
    text = b"external_id,name\r\nb-1,one\r\nb-2,two\r\n"
    file_part = (b'Content-Disposition: form-data; name="file"; filename="f.csv"\r\n'
                 b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(text) + b"\r\n")
    job_part = (b'Content-Disposition: form-data; name="job"\r\n\r\n{"operation": "upsert", "object_type": "'
                + kind.encode() + b'"}\r\n')
    resp = api.post("/v1/jobs", data=multipart(job_part, file_part), content_type="multipart/form-data; boundary=b0und")
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    assert job["status"] == "succeeded" and job["file"]["size"] == len(text)
    assert objects_of(api, kind) == {"b-1": {"name": "one"}, "b-2": {"name": "two"}}


# --- results.csv -------------------------------------------------------------------------------------------


def test_results_csv_keeps_every_outcome_under_its_headers_for_short_and_long_rows(api: Client) -> None:
    kind = unique("width")
    data = b"external_id,name\nq-1,one\nq-3\nq-4,four,extra,more\nq-5,five\n"
    job = run_csv(api, data, operation="upsert", object_type=kind)
    rows = parse_csv(api.get(f"/v1/jobs/{job['id']}/results.csv").body)

    assert rows[0] == ["_status", "_id", "_error", "external_id", "name"]
    outcomes = {row[3]: row for row in rows[1:]}
    assert outcomes["q-1"][:2] == ["added", api.results(job["id"])[0]["id"]]
    assert outcomes["q-1"][2:] == ["", "q-1", "one"]
    assert outcomes["q-3"][:2] == ["skipped", ""] and "the row has 1 columns" in outcomes["q-3"][2]
    assert outcomes["q-3"][3:] == ["q-3"]
    assert outcomes["q-4"][:2] == ["skipped", ""] and "the row has 4 columns" in outcomes["q-4"][2]
    assert outcomes["q-4"][3:] == ["q-4", "four", "extra", "more"]
    assert outcomes["q-5"][0] == "added" and outcomes["q-5"][3:] == ["q-5", "five"]
    assert [row[3] for row in rows[1:]] == ["q-1", "q-3", "q-4", "q-5"]


# --- times that cannot be represented ----------------------------------------------------------------------

def uploaded(stack: Stack) -> set[str]:
    directory = stack.data_dir / "uploads"
    return {path.name for path in directory.iterdir()} if directory.is_dir() else set()


OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.9999", "0000-01-01", "10000-01-01"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("name", ["created_from", "created_to"])
def test_an_out_of_range_file_filter_is_400(api: Client, name: str, value: str) -> None:
    resp = api.get("/v1/files?" + urllib.parse.urlencode({name: value}))
    assert refused(resp, 400, "bad_request")["field"] == name


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_an_out_of_range_schedule_start_is_400_and_leaves_no_file(stack: Stack, api: Client, value: str) -> None:
    before, uploads = jobs_total(api), uploaded(stack)
    resp = api.post("/v1/jobs", json_body={**SETTINGS, "file_content": "external_id\nx\n",
                                           "schedule": {"start_date": value, "cron": "0 * * * *"}})
    assert refused(resp, 400, "bad_request")["field"] == "schedule.start_date"
    assert jobs_total(api) == before
    assert uploaded(stack) == uploads


# --- templates -----------------------------------------------------------------------------------------------


def test_a_template_filter_of_1200_terms_is_400_not_a_database_error(api: Client) -> None:
    query = urllib.parse.urlencode({"object_type": "t", "q": " ".join(["a:1"] * 1200)})
    resp = api.get(f"/v1/job-types/objects/template?{query}")
    assert refused(resp, 400, "bad_request")["field"] == "q"
