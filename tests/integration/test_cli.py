"""The ``bulkjobs`` client commands as a user runs them, against the shared stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bulkjobs.client import ApiError, BulkJobsClient, ClientSettings
from tests.support import Client, Stack

JOB_ID = re.compile(r"[0-9a-f]{32}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bulkjobs(stack: Stack, *args: str, key: str = "key-a") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BULKJOBS_URL": f"http://127.0.0.1:{stack.port}", "BULKJOBS_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "bulkjobs", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def submitted_id(run: subprocess.CompletedProcess[str]) -> str:
    first = run.stdout.splitlines()[0]
    assert JOB_ID.fullmatch(first), run.stdout
    return first


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_a_csv_file_with_follow_exits_0(stack: Stack, api: Client, tmp_path: Path) -> None:
    kind = unique("machine")
    path = tmp_path / "machines.csv"
    path.write_text("external_id,name\nm-1,press\nm-2,lathe\nm-3,mill\n")

    run = bulkjobs(stack, "submit", str(path), "--operation", "upsert", "--object-type", kind,
                   "--description", "from the cli", "--follow")

    assert run.returncode == 0, run.stderr
    job_id = submitted_id(run)
    assert run.stdout.splitlines()[-1] == (
        f"{job_id} succeeded: 3/3 records (created 3, updated 0, deleted 0, skipped 0, failed 0)")
    assert "3/3" in run.stderr and "records" in run.stderr  # the progress bar
    job = api.job(job_id)
    assert (job["status"], job["object_type"], job["description"]) == ("succeeded", kind, "from the cli")
    assert job["file"]["name"] == "machines.csv"


def test_a_json_array_with_follow_exits_0(stack: Stack, api: Client, tmp_path: Path) -> None:
    kind = unique("machine")
    path = write_json(tmp_path / "records.json", [{"type": kind, "attributes": {"n": i}} for i in range(5)])

    run = bulkjobs(stack, "submit", str(path), "--type", "resources", "--action", "post", "--follow")

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].endswith("succeeded: 5/5 records (created 5, updated 0, deleted 0, "
                                                 "skipped 0, failed 0)")
    assert api.get(f"/v1/objects?type={kind}").body["total"] == 5


def test_a_json_envelope_is_sent_as_it_is(stack: Stack, api: Client, tmp_path: Path) -> None:
    envelope = {"type": "resources", "action": "external_id_set", "description": "envelope",
                "data": [{"type": unique("machine"), "external_id": "m-1"}]}
    run = bulkjobs(stack, "submit", str(write_json(tmp_path / "job.json", envelope)), "--follow")

    assert run.returncode == 0, run.stderr
    job = api.job(submitted_id(run))
    assert (job["action"], job["description"], job["counts"]["created"]) == ("external_id_set", "envelope", 1)


def test_ndjson_without_follow_prints_the_id(stack: Stack, api: Client, tmp_path: Path) -> None:
    kind = unique("machine")
    path = tmp_path / "records.ndjson"
    path.write_text("".join(json.dumps({"type": kind, "external_id": f"m-{i}"}) + "\n" for i in range(3)))

    run = bulkjobs(stack, "submit", str(path), "--type", "resources", "--action", "external_id_set",
                   "--description", "nightly")

    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    job = api.wait_done(submitted_id(run))
    assert (job["status"], job["description"], job["counts"]["created"]) == ("succeeded", "nightly", 3)


def test_a_job_that_fails_exits_1(stack: Stack, tmp_path: Path) -> None:
    path = write_json(tmp_path / "updates.json", [{"id": uuid.uuid4().hex, "attributes": {"a": 1}} for _ in range(2)])

    run = bulkjobs(stack, "submit", str(path), "--type", "resources", "--action", "update", "--follow")

    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-2].endswith("failed: 2/2 records (created 0, updated 0, deleted 0, skipped 0, failed 2)")
    assert lines[-1].startswith("error: all_records_failed: ")


def test_jobs_status_and_results_of_a_json_job(stack: Stack, api: Client, tmp_path: Path) -> None:
    kind = unique("machine")
    job = api.run({"type": "resources", "action": "post", "data": [{"type": kind}, 42, {"type": kind}]})

    listed = bulkjobs(stack, "jobs", "--status", "partially_succeeded")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "KIND", "PROCESSED", "CREATED"]
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(job["id"]))
    assert row == [job["id"], "partially_succeeded", "resources/post", "3/3", job["created_at"]]

    shown = bulkjobs(stack, "status", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == api.job(job["id"])

    out = tmp_path / "results.ndjson"
    written = bulkjobs(stack, "results", job["id"], "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == api.results(job["id"])


def test_results_of_a_csv_job_are_its_results_csv(stack: Stack, api: Client, tmp_path: Path) -> None:
    resp = api.post_csv(b"external_id,rpm\nm-1,900\nm-2,abc\n", operation="upsert", object_type=unique("machine"),
                        field_mappings=[{"api_name": "external_id", "index": 0},
                                        {"api_name": "rpm", "index": 1, "type": "integer"}])
    job = api.wait_done(resp.body["id"])

    out = tmp_path / "results.csv"
    run = bulkjobs(stack, "results", job["id"], "--output", str(out))

    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == api.get(f"/v1/jobs/{job['id']}/results.csv").body
    assert out.read_bytes().startswith(b"_status,_id,_error,external_id,rpm\r\nadded,")


def test_cancel_of_an_ended_job_exits_2(stack: Stack, api: Client) -> None:
    job = api.run({"type": "resources", "action": "post", "data": [{"type": unique("machine")}]})

    run = bulkjobs(stack, "cancel", job["id"])

    assert run.returncode == 2
    assert run.stderr.startswith("error: conflict: ") and "ended" in run.stderr


def test_an_unknown_job_exits_2(stack: Stack) -> None:
    run = bulkjobs(stack, "status", uuid.uuid4().hex)
    assert run.returncode == 2
    assert run.stderr.startswith("error: not_found: ")


def test_a_wrong_api_key_exits_2(stack: Stack, tmp_path: Path) -> None:
    for args in (["jobs"], ["submit", str(write_json(tmp_path / "a.json", [{}])), "--type", "resources",
                            "--action", "post", "--follow"]):
        run = bulkjobs(stack, *args, key="wrong")
        assert run.returncode == 2, args
        assert run.stderr.startswith("error: unauthorized: "), run.stderr


@pytest.mark.parametrize(("key", "code"), [("key-a", "not_found"), ("wrong", "unauthorized")])
async def test_the_live_socket_refusals_are_api_errors(stack: Stack, key: str, code: str) -> None:
    """An unknown job and a wrong key close the socket (4404, 1008): following raises, as a 4xx would."""
    settings = ClientSettings(f"http://127.0.0.1:{stack.port}", key)
    async with BulkJobsClient.open(settings) as client:
        with pytest.raises(ApiError) as raised:
            async for _ in client.live(uuid.uuid4().hex):
                pass
    assert raised.value.code == code


def test_retry_prints_the_new_job_follows_it_and_exits_by_how_it_ended(stack: Stack, api: Client) -> None:
    kind = unique("machine")
    job = api.run({"type": "resources", "action": "external_id_update",
                   "data": [{"type": kind, "external_id": "missing", "attributes": {"rpm": 1}}]})
    assert job["status"] == "failed"

    run = bulkjobs(stack, "retry", job["id"], "--follow")

    assert run.returncode == 1, run.stderr  # the record fails again
    retry_id = submitted_id(run)
    assert api.job(retry_id)["retry_of"] == job["id"]
    assert run.stdout.splitlines()[-2].startswith(f"{retry_id} failed: 1/1 records")
    assert [r["source_index"] for r in api.results(retry_id)] == [0]

    done = api.run({"type": "resources", "action": "post", "data": [{"type": kind}]})
    nothing = bulkjobs(stack, "retry", done["id"], "--include-skipped")
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: nothing_to_retry: ")
