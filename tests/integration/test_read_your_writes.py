"""Read your own writes: after a command's answer, the very next read through any API process
shows what the answer said (deletes of jobs, history and produced jobs, updates), and ids an
outside producer chose (with '-' and '_') delete like any other."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bulkjobs.broker import free_port
from tests.integration.test_producers import send_raw
from tests.support import TERMINAL, Client, Stack, wait_for


@pytest.fixture(scope="module")
def other_api(stack: Stack) -> Iterator[Client]:
    """A second API process on the shared stack (its own memory, the same view)."""
    port = free_port()
    with open(stack.data_dir / "api-other.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "bulkjobs", "api"],
                                   env={**stack.env, "BULKJOBS_PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}", "key-a")

    def up() -> bool:
        try:
            return client.get("/v1/health").status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, what="the second API process")
        yield client
    finally:
        process.terminate()
        process.wait(timeout=15)


def finished(api: Client, job_id: str) -> dict[str, Any]:
    """The job once the view shows it ended (read through ``api``, which may not know it yet)."""
    def ended() -> dict[str, Any] | None:
        resp = api.get(f"/v1/jobs/{job_id}")
        return resp.body if resp.status == 200 and resp.body["status"] in TERMINAL else None

    return wait_for(ended, what=f"job {job_id} to end")


def listed(api: Client, path: str) -> set[str]:
    return {job["id"] for job in api.get(path).body["items"]}


def small_job(kind: str) -> dict[str, Any]:
    return {"type": "resources", "action": "post", "data": [{"type": kind}]}


def test_a_deleted_job_is_gone_on_the_next_read_of_every_api_process(api: Client, other_api: Client) -> None:
    kind = f"ryw-{uuid.uuid4().hex[:8]}"
    # Accepted by the other process, which remembers them until its view has them.
    ids = [other_api.submit(small_job(kind))["id"] for _ in range(4)]
    for job_id in ids:
        finished(api, job_id)

    assert api.delete(f"/v1/jobs/{ids[0]}").status == 204
    assert api.delete(f"/v1/jobs?ids={ids[1]},{ids[2]}").status == 204
    assert api.delete(f"/v1/history/{ids[3]}").status == 204
    for client in (other_api, api):
        for job_id in ids:
            assert client.get(f"/v1/jobs/{job_id}").status == 404
            assert client.get(f"/v1/jobs/{job_id}/results").status == 404
        assert not listed(client, "/v1/jobs?limit=1000") & set(ids)
        assert not listed(client, "/v1/history?limit=1000") & set(ids)


def test_an_update_answers_the_job_as_the_next_read_of_any_process_shows_it(api: Client, other_api: Client) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    job = api.submit({**small_job("ryw-later"), "description": "before", "schedule": {"start_date": later}})
    wait_for(lambda: other_api.get(f"/v1/jobs/{job['id']}").status == 200,  # a 202 is per process (README)
             what="the other process to see the job")

    resp = other_api.put(f"/v1/jobs/{job['id']}", json_body={"description": "after"})

    assert resp.status == 200 and resp.body["description"] == "after"
    assert api.job(job["id"]) == resp.body == other_api.job(job["id"])
    suspended = api.put(f"/v1/jobs/{job['id']}", json_body={"suspended": True})
    assert suspended.status == 200 and other_api.job(job["id"])["status"] == "suspended"
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status == 200


def produce(stack: Stack, job_id: str, kind: str) -> None:
    """A one-record job produced straight to Kafka under the producer's own id."""
    request = {"kind": "request", "job_id": job_id, "tenant": "tenant-a", "type": "resources", "action": "post",
               "description": "produced", "parts": 1}
    part = {"kind": "part", "job_id": job_id, "part": 0, "records": [{"type": kind}]}
    send_raw(stack, [(job_id.encode(), orjson.dumps(request)), (job_id.encode(), orjson.dumps(part))])


def test_produced_jobs_whose_ids_have_dashes_and_underscores_are_deleted(stack: Stack, api: Client,
                                                                         other_api: Client) -> None:
    kind = f"ryw-produced-{uuid.uuid4().hex[:8]}"
    ids = [f"nightly-{uuid.uuid4().hex[:8]}_{n}" for n in range(3)]
    for job_id in ids:
        produce(stack, job_id, kind)
    for job_id in ids:
        assert finished(api, job_id)["status"] == "succeeded"

    assert api.delete(f"/v1/jobs/{ids[0]}").status == 204
    assert api.delete(f"/v1/jobs?ids={ids[1]},{ids[2]}").status == 204
    for job_id in ids:
        assert api.get(f"/v1/jobs/{job_id}").status == 404 and other_api.get(f"/v1/jobs/{job_id}").status == 404


def test_a_bulk_delete_checks_every_id_before_deleting_any(api: Client) -> None:
    done = api.run(small_job("ryw-bulk"))
    too_many = ",".join(f"j{n}" for n in range(101))
    for query, status in ((f"{done['id']},no-such_job", 404), (too_many, 400), (f"{done['id']},../../etc", 404)):
        resp = api.delete(f"/v1/jobs?ids={query}")
        assert resp.status == status and resp.body["error"]["code"], resp.body
    assert api.get(f"/v1/jobs/{done['id']}").status == 200  # none of those deleted anything


def test_an_exports_new_params_show_in_the_answer_and_the_next_read(api: Client, other_api: Client) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    job = api.submit({"kind": "export", "title": "later", "object_type": "ryw-export",
                      "schedule": {"start_date": later}})
    wait_for(lambda: other_api.get(f"/v1/jobs/{job['id']}").status == 200, what="the other process to see the job")

    resp = other_api.put(f"/v1/jobs/{job['id']}", json_body={"params": {"format": "csv", "file_split_size": 7}})

    assert resp.status == 200, resp.body
    assert resp.body["params"]["format"] == "csv" and resp.body["params"]["file_split_size"] == 7
    assert api.job(job["id"]) == resp.body
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status == 200
