"""Job retention: with BULKJOBS_JOB_RETENTION of a few seconds, finished jobs are deleted by the
service itself, as a DELETE would delete them (404s, off every list, files off the disk), while
running jobs and definitions with runs to fire are untouched, and expiry goes on after a restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkjobs.clock import format_time, parse_time
from tests.support import TERMINAL, Client, Stack, statuses_of, wait_for

RETENTION = 6  # seconds: long enough to look at a finished job before it goes, short enough to wait for


@pytest.fixture(scope="module")
def retaining(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack(BULKJOBS_JOB_RETENTION=str(RETENTION), BULKJOBS_BATCH_RECORDS="100").start_all()
    yield stack
    stack.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def records(kind: str, n: int) -> list[dict[str, Any]]:
    return [{"type": kind, "external_id": str(i), "attributes": {"i": i}} for i in range(n)]


def expires_at_is_set(job: dict[str, Any]) -> None:
    expected = format_time(parse_time(job["completed_at"]) + timedelta(seconds=RETENTION))
    assert job["expires_at"] == expected, job


def gone(api: Client, job_id: str, timeout: float = 60) -> None:
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").status == 404, timeout=timeout, interval=0.2,
             what=f"job {job_id} to expire")


def listed(api: Client, path: str) -> set[str]:
    return {item["id"] for item in api.get(path).body["items"]}


def upload_path(stack: Stack, job_id: str) -> Path:
    return stack.data_dir / "uploads" / job_id


def export_dir(stack: Stack, job_id: str) -> Path:
    return stack.data_dir / "exports" / job_id


def test_finished_json_csv_and_export_jobs_are_gone_everywhere_after_expiry(retaining: Stack) -> None:
    api = retaining.client()
    kind = unique("kept")
    json_job = api.run({"type": "resources", "action": "external_id_set", "description": kind,
                        "data": records(kind, 300)})
    csv_resp = api.post_csv(b"external_id,name\na,alpha\nb,beta\na,again\n", operation="insert",
                            object_type=kind, description=kind)
    assert csv_resp.status == 202, csv_resp.body
    csv_job = api.wait_done(csv_resp.body["id"])
    export_resp = api.post("/v1/jobs", json_body={"kind": "export", "title": kind, "object_type": kind})
    assert export_resp.status == 202, export_resp.body
    export_job = api.wait_done(export_resp.body["id"])
    [export_file] = export_job["files"]
    ids = [json_job["id"], csv_job["id"], export_job["id"]]

    for job in (json_job, csv_job, export_job):
        expires_at_is_set(job)
    assert upload_path(retaining, csv_job["id"]).is_file()
    assert any(export_dir(retaining, export_job["id"]).iterdir())

    deleted = api.run({"type": "resources", "action": "external_id_set", "data": records(unique("user"), 1)})
    assert api.delete(f"/v1/jobs/{deleted['id']}").status == 204  # a user's DELETE, to compare with
    for job_id in ids:
        gone(api, job_id)

    expected_404 = api.get(f"/v1/jobs/{deleted['id']}").body["error"]["code"]
    for job_id in ids:
        for path in ("", "/results", "/log", "/results.csv", "/file", "/files"):
            resp = api.get(f"/v1/jobs/{job_id}{path}")
            assert (resp.status, resp.body["error"]["code"]) == (404, expected_404), (job_id, path)
    assert api.get(f"/v1/files/{export_file['name']}").status == 404
    assert not listed(api, "/v1/jobs?limit=1000") & set(ids)
    assert not listed(api, f"/v1/jobs?q={kind}") & set(ids)
    assert not listed(api, "/v1/history?limit=1000") & set(ids)
    assert export_file["name"] not in {f["name"] for f in api.get("/v1/files?limit=1000").body["items"]}
    assert not upload_path(retaining, csv_job["id"]).exists()
    assert not export_dir(retaining, export_job["id"]).exists()
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 302  # objects stay (300 + the CSV's 2)
    for job_id in ids:  # the status topic is compacted: a tombstone after the deleted status lets it drop the job
        *_, last_status, tombstone = statuses_of(retaining, job_id)
        assert last_status is not None and last_status["status"] == "deleted" and tombstone is None


def test_running_jobs_and_waiting_definitions_are_untouched(retaining: Stack) -> None:
    api = retaining.client()
    kind = unique("running")
    running = api.submit({"type": "resources", "action": "external_id_set", "data": records(kind, 20_000)})
    assert api.post(f"/v1/jobs/{running['id']}/suspend").status == 200
    tomorrow = format_time(datetime.now(UTC) + timedelta(days=1))
    waiting = api.submit({"type": "resources", "action": "external_id_set", "data": records(kind, 5),
                          "schedule": {"start_date": tomorrow}})
    witness = api.run({"type": "resources", "action": "external_id_set", "data": records(unique("witness"), 1)})

    gone(api, witness["id"])  # expiry has looked at the partitions since: the others were not due
    for job_id, status in ((running["id"], "suspended"), (waiting["id"], "scheduled")):
        job = api.job(job_id)
        assert (job["status"], job["expires_at"]) == (status, None)

    assert api.post(f"/v1/jobs/{running['id']}/resume").status == 200
    done = api.wait_done(running["id"], timeout=120)
    assert done["status"] == "succeeded" and done["counts"]["processed"] == 20_000
    expires_at_is_set(done)
    gone(api, running["id"])


def test_a_definition_keeps_firing_while_its_runs_expire_then_expires_itself(retaining: Stack) -> None:
    api = retaining.client()
    runs = 20  # one a second: many still to fire when the first run expires, however slow the machine
    definition = api.submit({"type": "resources", "action": "external_id_set", "data": records(unique("cron"), 5),
                             "schedule": {"cron": "* * * * * *", "runs": runs}})
    first_run = f"{definition['id']}r0"
    wait_for(lambda: api.get(f"/v1/jobs/{first_run}").status == 200, what="the first run")

    gone(api, first_run)
    still = api.job(definition["id"])
    assert still["status"] == "scheduled" and still["expires_at"] is None and still["runs"] < runs
    later_run = f"{definition['id']}r{still['runs']}"  # a run fired after the first one expired
    wait_for(lambda: (resp := api.get(f"/v1/jobs/{later_run}")).status == 200 and resp.body["status"] in TERMINAL,
             what="a run fired after the first one expired")

    ended = wait_for(lambda: (job := api.job(definition["id"]))["status"] == "succeeded" and job, timeout=60,
                     what="the definition's last run")
    assert ended["runs"] == runs
    expires_at_is_set(ended)
    gone(api, definition["id"])
    gone(api, f"{definition['id']}r{runs - 1}")


def test_expiry_still_happens_after_the_worker_store_and_api_restart(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(BULKJOBS_JOB_RETENTION=str(RETENTION)).start_all()
    api = stack.client()
    kind = unique("restart")
    resp = api.post_csv(b"external_id,name\na,alpha\nb,beta\n", operation="insert", object_type=kind)
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    for part in ("worker", "store", "api"):
        stack.kill(part)
    assert datetime.now(UTC) < parse_time(job["expires_at"]), "the job expired before the restart: proved nothing"

    for part in ("worker", "store", "api"):
        stack.start(part)
    stack.wait_healthy()
    gone(api, job["id"], timeout=90)
    assert not upload_path(stack, job["id"]).exists()
    assert job["id"] not in listed(api, "/v1/jobs?limit=1000")
