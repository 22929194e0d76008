"""The per-tenant cap on active jobs (BULKJOBS_MAX_ACTIVE_JOBS), on a stack of its own with a cap of 2:
the API answers 429 at the cap, a job produced to Kafka over it fails, and a place frees up when a job ends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from tests.integration.test_producers import send_raw
from tests.support import Stack, wait_for


def request_without_parts(job_id: str) -> tuple[bytes, bytes]:
    """A job produced to Kafka that announces a part it never sends: it stays queued."""
    return job_id.encode(), json.dumps({"kind": "request", "job_id": job_id, "tenant": "tenant-a",
                                        "type": "resources", "action": "post", "parts": 1}).encode()


def test_the_cap_answers_429_fails_a_produced_job_and_frees_a_place_when_a_job_ends(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(BULKJOBS_MAX_ACTIVE_JOBS="2").start_all()
    api, other_tenant = stack.client("key-a"), stack.client("key-b")
    waiting = [f"waiting-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    send_raw(stack, [request_without_parts(job_id) for job_id in waiting])
    for job_id in waiting:
        wait_for(lambda job_id=job_id: api.get(f"/v1/jobs/{job_id}").body.get("status") == "queued",
                 what=f"job {job_id} queued")

    job = {"type": "resources", "action": "post", "data": [{"type": "capped"}]}
    refused = api.post("/v1/jobs", json_body=job)
    assert refused.status == 429, refused.body
    assert refused.headers["Retry-After"] == "5"
    assert (refused.body["error"]["code"], refused.body["error"]["limit"]) == ("too_many_active_jobs", 2)
    assert other_tenant.post("/v1/jobs", json_body=job).status == 202  # the cap is per tenant

    over = f"over-{uuid.uuid4().hex[:8]}"
    send_raw(stack, [request_without_parts(over)])
    produced = wait_for(lambda: (resp := api.get(f"/v1/jobs/{over}")).status == 200 and resp.body,
                        what="the produced job over the cap")
    assert (produced["status"], produced["error"]["code"]) == ("failed", "too_many_active_jobs")

    assert api.post(f"/v1/jobs/{waiting[0]}/cancel").status == 200
    accepted = api.post("/v1/jobs", json_body=job)
    assert accepted.status == 202, accepted.body
    assert api.wait_done(accepted.body["id"])["status"] == "succeeded"
