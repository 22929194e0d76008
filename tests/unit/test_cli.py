"""The command line without a server: how a file is sent, exit statuses, usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkjobs.cli import exit_status, format_table, main, summary
from bulkjobs.client import ClientSettings, JobOptions, plan_upload


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def job(status: str, **counts: int) -> dict:
    base = {"total": 2, "processed": 2, "created": 0, "updated": 0, "deleted": 0, "skipped": 0, "failed": 0}
    return {"id": "j1", "status": status, "counts": {**base, **counts}, "error": None}


def test_csv_is_text_csv_with_its_settings_and_base_name(tmp_path: Path) -> None:
    path = write(tmp_path, "Machines.CSV", "external_id,name\nm-1,press\n")
    upload = plan_upload(path, JobOptions(operation="upsert", object_type="machine", field_mappings="[]",
                                          character_encoding="utf-8", description="d"))
    assert upload.content_type == "text/csv"
    assert upload.params == {"operation": "upsert", "object_type": "machine", "field_mappings": "[]",
                             "character_encoding": "utf-8", "description": "d", "file_name": "Machines.CSV"}


@pytest.mark.parametrize("name", ["records.ndjson", "records.jsonl"])
def test_ndjson_takes_its_job_fields_in_the_query(tmp_path: Path, name: str) -> None:
    upload = plan_upload(write(tmp_path, name, '{"type":"m"}\n'), JobOptions(type="resources", action="post"))
    assert (upload.content_type, upload.params) == ("application/x-ndjson", {"type": "resources", "action": "post"})


def test_a_json_array_takes_its_job_fields_in_the_query(tmp_path: Path) -> None:
    path = write(tmp_path, "records.json", "\n  \t[{}]")
    upload = plan_upload(path, JobOptions(type="resources", action="post", description="d"))
    assert upload.content_type == "application/json"
    assert upload.params == {"type": "resources", "action": "post", "description": "d"}


def test_a_json_envelope_is_sent_as_it_is(tmp_path: Path) -> None:
    path = write(tmp_path, "job.json", ' {"type": "resources", "action": "post", "data": [{}]}')
    assert plan_upload(path, JobOptions()).params == {}
    with pytest.raises(ValueError, match="--type, --action cannot be used with a JSON envelope"):
        plan_upload(path, JobOptions(type="resources", action="post"))


def test_the_json_kind_is_found_past_a_chunk_of_whitespace(tmp_path: Path) -> None:
    path = write(tmp_path, "records.json", " " * 100_000 + "[]")
    assert plan_upload(path, JobOptions(type="resources", action="post")).params["type"] == "resources"


def test_settings_of_another_form_are_refused(tmp_path: Path) -> None:
    csv = write(tmp_path, "a.csv", "external_id\nm\n")
    with pytest.raises(ValueError, match="--type cannot be used with a CSV file"):
        plan_upload(csv, JobOptions(type="resources"))
    ndjson = write(tmp_path, "a.ndjson", "{}\n")
    with pytest.raises(ValueError, match="--operation, --object-type cannot be used with an NDJSON file"):
        plan_upload(ndjson, JobOptions(operation="upsert", object_type="m"))


@pytest.mark.parametrize("name, content", [
    ("m.csv", "external_id\nm-1\n"), ("m.ndjson", '{"type":"m"}\n'), ("m.json", '[{"type":"m"}]'),
    ("m.json", '{"type":"resources","action":"post","data":[{"type":"m"}]}'),
])
def test_every_form_takes_dry_run_in_the_query(tmp_path: Path, name: str, content: str) -> None:
    upload = plan_upload(write(tmp_path, name, content), JobOptions(dry_run="true"))
    assert upload.params["dry_run"] == "true"


def test_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="send a .csv, .json, .ndjson or .jsonl file"):
        plan_upload(write(tmp_path, "a.txt", "x"), JobOptions())


def test_client_settings_from_the_environment() -> None:
    assert ClientSettings.from_env({}) == ClientSettings("http://127.0.0.1:8080", None)
    settings = ClientSettings.from_env({"BULKJOBS_URL": "http://h:1/v1/", "BULKJOBS_API_KEY": "k"})
    assert (settings.base, settings.api_key) == ("http://h:1", "k")


def test_only_succeeded_exits_0() -> None:
    assert exit_status(job("succeeded")) == 0
    for status in ("partially_succeeded", "failed", "cancelled", "processing"):
        assert exit_status(job(status)) == 1


def test_summary_and_table() -> None:
    assert summary(job("partially_succeeded", created=1, failed=1)) == (
        "j1 partially_succeeded: 2/2 records (created 1, updated 0, deleted 0, skipped 0, failed 1)")
    assert format_table([("ID", "STATUS"), ("abc", "ok")]) == "ID   STATUS\nabc  ok"


def test_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BULKJOBS_API_KEY", raising=False)
    assert main(["jobs"]) == 2
    assert "no API key" in capsys.readouterr().err

    monkeypatch.setenv("BULKJOBS_API_KEY", "k")
    assert main(["submit", str(write(tmp_path, "a.txt", "x"))]) == 2
    assert "send a .csv" in capsys.readouterr().err
    assert main(["submit", str(tmp_path / "missing.csv")]) == 2
    assert main(["jobs", "--status", "done"]) == 2
    assert main(["nope"]) == 2


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("dev", "api", "worker", "store", "submit", "jobs", "status", "results", "cancel", "retry"):
        assert f"  {command} " in out
