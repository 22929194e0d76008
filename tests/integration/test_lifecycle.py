"""A job's life: suspend and resume, cancel, update, bulk delete, schedules, runs and history."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from typing import Any

import pytest

from bulkjobs.kafka.topics import TopicNames
from tests.support import TERMINAL, Client, Stack, produce, wait_for


def records(kind: str, n: int) -> list[dict[str, Any]]:
    return [{"type": kind, "external_id": str(i), "attributes": {"i": i}} for i in range(n)]


def settled(api: Client, job_id: str, quiet: float = 1.5) -> dict[str, Any]:
    """The job once its processed count has not moved for ``quiet`` seconds."""
    last: dict[str, Any] = {"processed": -1, "since": time.monotonic()}

    def still() -> dict[str, Any] | None:
        job = api.job(job_id)
        if job["counts"]["processed"] != last["processed"]:
            last.update(processed=job["counts"]["processed"], since=time.monotonic())
            return None
        return job if time.monotonic() - last["since"] >= quiet else None

    return wait_for(still, timeout=60, interval=0.2, what=f"job {job_id} to stop moving")


def error_of(resp: Any) -> dict[str, Any]:
    assert isinstance(resp.body, dict) and "error" in resp.body, resp.body
    return resp.body["error"]


def test_suspend_stops_an_import_and_resume_finishes_it_exactly(stack: Stack, api: Client) -> None:
    kind = f"suspend-{uuid.uuid4().hex[:8]}"
    job = OpenJob(stack, kind, 100_000)
    wait_for(lambda: api.get(f"/v1/jobs/{job.id}").status == 200, what="the job to be accepted")
    answer = api.post(f"/v1/jobs/{job.id}/suspend")
    assert answer.status == 200 and answer.body["status"] == "suspended"
    job.sending.join()  # the parts sent while it is suspended are held
    paused = settled(api, job.id)
    assert paused["status"] == "suspended" and paused["counts"]["processed"] < 100_000
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == paused["counts"]["processed"]

    assert error_of(api.post(f"/v1/jobs/{job.id}/suspend"))["status"] == "suspended"
    resumed = api.post(f"/v1/jobs/{job.id}/resume")
    assert resumed.status == 200 and resumed.body["status"] in ("queued", "processing")  # queued: none applied yet
    job.finish()
    done = api.wait_done(job.id, timeout=120)
    assert done["status"] == "succeeded"
    assert done["counts"] == {"total": 100_000, "processed": 100_000, "created": 100_000, "updated": 0,
                              "deleted": 0, "skipped": 0, "failed": 0}
    results = api.results(job.id)
    assert [r["index"] for r in results] == list(range(100_000)) and all(r["success"] for r in results)
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 100_000


def test_a_suspended_job_cancelled_keeps_what_it_applied(stack: Stack, api: Client) -> None:
    kind = f"cancel-susp-{uuid.uuid4().hex[:8]}"
    job = OpenJob(stack, kind, 60_000)
    wait_for(lambda: api.get(f"/v1/jobs/{job.id}").status == 200, what="the job to be accepted")
    assert api.post(f"/v1/jobs/{job.id}/suspend").status == 200
    assert api.job(job.id)["status"] == "suspended"
    assert api.post(f"/v1/jobs/{job.id}/cancel").status == 200
    assert api.job(job.id)["status"] == "cancelled"
    job.finish()  # a cancelled job takes no more records
    final = settled(api, job.id)
    assert final["status"] == "cancelled" and final["counts"]["processed"] < 60_000
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == final["counts"]["processed"]
    assert api.post(f"/v1/jobs/{job.id}/resume").status == 409


def test_every_transition_not_allowed_is_409_with_the_status(api: Client) -> None:
    done = api.run({"type": "resources", "action": "post", "data": [{"type": "lifecycle"}]})
    for path in ("suspend", "resume", "cancel"):
        resp = api.post(f"/v1/jobs/{done['id']}/{path}")
        assert resp.status == 409 and error_of(resp)["status"] == "succeeded", path
    resp = api.put(f"/v1/jobs/{done['id']}", json_body={"description": "too late"})
    assert resp.status == 409 and error_of(resp)["status"] == "succeeded"

    running = api.submit({"type": "resources", "action": "external_id_set",
                          "data": records(f"busy-{uuid.uuid4().hex[:8]}", 50_000)})
    wait_for(lambda: api.job(running["id"])["counts"]["processed"] > 0, what="the job to start")
    resp = api.post(f"/v1/jobs/{running['id']}/resume")
    assert resp.status == 409 and error_of(resp)["status"] in ("processing", "succeeded")
    # Suspended, the started job cannot end while the commands that need an ended (or a not yet
    # started) job are tried.
    if api.post(f"/v1/jobs/{running['id']}/suspend").status == 200:
        for resp in (api.delete(f"/v1/jobs/{running['id']}"),
                     api.put(f"/v1/jobs/{running['id']}", json_body={"description": "started"})):
            assert resp.status == 409 and error_of(resp)["status"] == "suspended"
        assert api.delete(f"/v1/history/{running['id']}").status == 400
        assert api.post(f"/v1/jobs/{running['id']}/cancel").status == 200
    api.wait_done(running["id"], timeout=120)


def test_update_a_job_that_has_not_started_and_delete_many(api: Client) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    job = api.submit({"type": "resources", "action": "post", "data": [{"type": "later"}],
                      "schedule": {"start_date": later}})
    assert job["status"] == "scheduled" and job["schedule"]["start_date"].startswith(later[:19])
    even_later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    resp = api.put(f"/v1/jobs/{job['id']}", json_body={"description": "moved", "schedule": {"start_date": even_later}})
    assert resp.status == 200, resp.body
    updated = api.job(job["id"])
    assert updated == resp.body and updated["description"] == "moved"  # the answer is what the next read shows
    assert updated["schedule"]["start_date"].startswith(even_later[:19]) and updated["status"] == "scheduled"
    for body, field, code in (({"schedule": {"cron": "not cron"}}, "schedule.cron", "invalid_cron"),
                              ({"colour": "red"}, "colour", "unknown_field"),
                              ({"suspended": "yes"}, "suspended", "invalid_field"),
                              ({"params": {}}, "params", "bad_request")):
        resp = api.put(f"/v1/jobs/{job['id']}", json_body=body)
        assert resp.status == 400 and (error_of(resp)["field"], error_of(resp)["code"]) == (field, code), body

    assert api.put(f"/v1/jobs/{job['id']}", json_body={"suspended": True}).status == 200
    assert api.job(job["id"])["status"] == "suspended"
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status == 200
    assert api.job(job["id"])["status"] == "cancelled"

    finished = [api.run({"type": "resources", "action": "post", "data": [{"type": "many"}]})["id"] for _ in range(2)]
    missing = api.delete(f"/v1/jobs?ids={finished[0]},nope,{finished[1]}")
    assert missing.status == 404 and error_of(missing)["missing"] == ["nope"]
    assert api.delete(f"/v1/jobs?ids={','.join([*finished, job['id']])}").status == 204
    for job_id in (*finished, job["id"]):
        assert api.get(f"/v1/jobs/{job_id}").status == 404


@pytest.mark.parametrize("schedule, field", [
    ({"cron": "every day"}, "schedule.cron"),
    ({"start_date": "2001-01-01T00:00:00Z"}, "schedule.start_date"),
    ({"runs": 0, "cron": "* * * * *"}, "schedule.runs"),
    ({"immediately": "yes"}, "schedule.immediately"),
    ({}, "schedule"),
])
def test_a_bad_schedule_is_400(api: Client, schedule: dict[str, Any], field: str) -> None:
    resp = api.post("/v1/jobs", json_body={"type": "resources", "action": "post", "data": [{"type": "x"}],
                                           "schedule": schedule})
    assert resp.status == 400 and error_of(resp)["field"] == field


def runs_of(api: Client, definition: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/jobs/{definition}/runs?limit=1000&sort=created_at&order=asc").body["items"]


def test_a_schedule_every_second_fires_exactly_its_runs(api: Client) -> None:
    kind = f"cron-{uuid.uuid4().hex[:8]}"
    definition = api.submit({"type": "resources", "action": "external_id_set", "description": "every second",
                             "data": records(kind, 50), "schedule": {"cron": "* * * * * *", "runs": 3}})
    assert definition["status"] == "scheduled"

    wait_for(lambda: api.job(definition["id"])["status"] == "succeeded", timeout=60, what="three runs")
    runs = wait_for(lambda: (found := runs_of(api, definition["id"])) and len(found) == 3
                    and all(r["status"] in TERMINAL for r in found) and found, what="the three runs to finish")
    assert api.job(definition["id"])["runs"] == 3
    assert all(r["parent_id"] == definition["id"] and r["status"] == "succeeded" for r in runs)
    assert [r["counts"]["created"] for r in runs] == [50, 0, 0]
    assert [r["counts"]["updated"] for r in runs] == [0, 50, 50]
    assert len({r["scheduled_for"] for r in runs}) == 3
    assert len(api.results(runs[1]["id"])) == 50
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 50

    history = api.get(f"/v1/history?job_id={definition['id']}").body
    assert history["total"] == 3 and {r["id"] for r in history["items"]} == {r["id"] for r in runs}
    assert definition["id"] not in [j["id"] for j in api.get("/v1/history?limit=1000").body["items"]]
    progress = api.get(f"/v1/history/{runs[0]['id']}/progress").body
    assert progress["progress"] == 100 and progress["status"] == "succeeded"
    assert api.get(f"/v1/history/{definition['id']}").status == 404
    assert api.delete(f"/v1/history/{runs[0]['id']}").status == 204
    assert len(runs_of(api, definition["id"])) == 2
    time.sleep(2)  # a finished schedule must not fire again: absence cannot be awaited
    assert len(runs_of(api, definition["id"])) == 2


def test_schedules_survive_a_worker_restart_and_missed_ticks_fire_once(make_stack: Any) -> None:
    stack: Stack = make_stack().start_all()
    api = stack.client()
    definition = api.submit({"type": "resources", "action": "external_id_set", "data": records("tick", 20),
                             "schedule": {"cron": "* * * * * */2", "runs": 5}})
    wait_for(lambda: len(runs_of(api, definition["id"])) >= 2, timeout=60, what="two runs")
    stack.kill("worker")
    time.sleep(8)  # the scheduler is down for several ticks: they must not all fire later
    stack.start("worker")

    wait_for(lambda: api.job(definition["id"])["status"] == "succeeded", timeout=90, what="five runs")
    runs = wait_for(lambda: (found := runs_of(api, definition["id"])) and len(found) >= 5
                    and all(r["status"] in TERMINAL for r in found) and found, what="the five runs to finish")
    assert len(runs) == 5 and all(r["status"] == "succeeded" for r in runs)
    due = sorted(time.mktime(time.strptime(r["scheduled_for"][:19], "%Y-%m-%dT%H:%M:%S")) for r in runs)
    gaps = [b - a for a, b in itertools.pairwise(due)]
    assert max(gaps) >= 8  # the downtime: one run for it, not one per missed tick
    assert sorted(gaps)[:-1] == [2.0] * (len(gaps) - 1), gaps  # every other run is one tick after the last


PARTITIONS, BATCH_RECORDS = 8, 1000  # the shared stack's defaults: at most one batch per partition in flight
PART_RECORDS = 4_000  # about 200 KiB a part, under the 512 KiB docs/topics.md asks producers to keep to


class OpenJob:
    """A job of ``total`` records from a slow Kafka producer (docs/topics.md): all its parts but
    the last go out 80 ms apart (at least 4 s for 200,000: the pipeline cannot get ahead of
    them); the last one only when ``finish`` is called, so the job cannot end before. An HTTP
    job of any size the suite can afford is applied while its batches are published, before a
    poll sees it start."""

    def __init__(self, stack: Stack, kind: str, total: int) -> None:
        self.id, self.brokers = f"open-{uuid.uuid4().hex}", stack.brokers
        self.topic = TopicNames(stack.prefix).job_events
        rows = records(kind, total)
        parts = [rows[i:i + PART_RECORDS] for i in range(0, total, PART_RECORDS)]
        request = {"kind": "request", "job_id": self.id, "tenant": "tenant-a", "type": "resources",
                   "action": "external_id_set", "parts": len(parts)}
        messages = [self._message(request)] + [self._message({"kind": "part", "job_id": self.id, "part": n,
                                                              "records": part}) for n, part in enumerate(parts)]
        self.last = messages.pop()
        self.sending = threading.Thread(target=produce, args=(self.brokers, self.topic, messages, 0.08))
        self.sending.start()

    def _message(self, message: dict[str, Any]) -> tuple[bytes, bytes]:
        return self.id.encode(), json.dumps(message).encode()

    def finish(self) -> None:
        """Send the last part, once every other one was sent."""
        self.sending.join()
        produce(self.brokers, self.topic, [self.last])


def stop_mid_way(stack: Stack, api: Client, command: str) -> tuple[Any, dict[str, Any], dict[str, Any], str]:
    """An open job of 200,000 records sent ``command`` well under way: the answer, the job on
    the next read, the job once its counts stop moving, and the type of its objects."""
    kind = f"{command}-bound-{uuid.uuid4().hex[:8]}"
    job = OpenJob(stack, kind, 200_000)
    wait_for(lambda: api.get(f"/v1/jobs/{job.id}").status == 200 and api.job(job.id)["counts"]["processed"] >= 20_000,
             timeout=120, what="the job to be under way")
    answer = api.post(f"/v1/jobs/{job.id}/{command}")
    at_answer = api.job(job.id)
    job.sending.join()
    return answer, at_answer, settled(api, job.id), kind


def assert_counts_match_what_was_written(api: Client, job: dict[str, Any], kind: str) -> None:
    processed = job["counts"]["processed"]
    assert job["counts"]["created"] == processed
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == processed
    stored, after = 0, 0  # the results of a stopped job have gaps: page by record index
    while items := api.get(f"/v1/jobs/{job['id']}/results?offset={after}&limit=1000").body["items"]:
        stored, after = stored + len(items), items[-1]["index"] + 1
    assert stored == processed


def test_after_a_cancels_answer_at_most_a_batch_per_partition_is_applied(stack: Stack, api: Client) -> None:
    answer, at_answer, final, kind = stop_mid_way(stack, api, "cancel")

    assert answer.status == 200 and answer.body["status"] == "cancelled"
    assert at_answer["status"] == "cancelled" and final["status"] == "cancelled"
    assert 0 < final["counts"]["processed"] < 200_000
    assert final["counts"]["processed"] - at_answer["counts"]["processed"] <= PARTITIONS * BATCH_RECORDS
    assert_counts_match_what_was_written(api, final, kind)


def test_after_a_suspends_answer_at_most_a_batch_per_partition_is_applied(stack: Stack, api: Client) -> None:
    answer, at_answer, final, kind = stop_mid_way(stack, api, "suspend")

    assert answer.status == 200 and answer.body["status"] == "suspended"
    assert at_answer["status"] == "suspended" and final["status"] == "suspended"
    assert 0 < final["counts"]["processed"] < 200_000
    assert final["counts"]["processed"] - at_answer["counts"]["processed"] <= PARTITIONS * BATCH_RECORDS
    assert_counts_match_what_was_written(api, final, kind)
    assert api.post(f"/v1/jobs/{final['id']}/cancel").status == 200
