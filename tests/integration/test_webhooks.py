"""Completion webhooks end to end, on the real broker: a test receiver (an aiohttp server in a
thread) gets the signed webhook of a finished job and verifies it with the ``standardwebhooks``
package; a delivery the receiver refused is retried, also across a worker restart; bad and
private callback URLs are refused at submit."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from standardwebhooks import Webhook

from bulkjobs.kafka.topics import JobRequest, RecordPart, TopicNames, encode
from bulkjobs.settings import new_webhook_secret
from tests.receiver import Receiver
from tests.support import Client, Stack, produce, wait_for

SECRET = new_webhook_secret()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    stop = receiving.serve()
    yield receiving
    stop()


@pytest.fixture(scope="module")
def hooked(make_stack: Callable[..., Stack]) -> Stack:
    """A stack whose tenant A signs webhooks with ``SECRET``, retrying after half a second."""
    return make_stack(BULKJOBS_WEBHOOK_SECRETS=f"tenant-a={SECRET}", BULKJOBS_WEBHOOK_BACKOFF="0.5",
                      BULKJOBS_WEBHOOK_BACKOFF_CAP="1").start_all()


def a_job(callback_url: str) -> dict[str, object]:
    return {"type": "resources", "action": "post", "callback_url": callback_url,
            "data": [{"type": "machine", "attributes": {"name": "press"}}, 42]}


def delivered(api: Client, job_id: str) -> dict[str, object]:
    return wait_for(lambda: (job := api.job(job_id))["callback"]["status"] == "delivered" and job,
                    timeout=90, what=f"the webhook of job {job_id} to be delivered")


def test_a_finished_job_posts_a_signed_webhook_retried_after_a_500(hooked: Stack, receiver: Receiver) -> None:
    api = hooked.client("key-a")
    receiver.answers["after-500"] = [500, 200]
    submitted = api.submit(a_job(receiver.url("after-500")))
    assert submitted["callback"] == {"url": receiver.url("after-500"), "status": "pending", "attempts": 0,
                                     "last_attempt_at": None, "last_error": None}
    job = delivered(api, submitted["id"])
    assert job["status"] == "partially_succeeded"
    assert job["callback"]["attempts"] == 2 and job["callback"]["last_error"] is None
    first, second = receiver.got("after-500")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"{job['id']}.partially_succeeded"
    payload = Webhook(SECRET).verify(second.body, second.headers)
    assert payload["type"] == "job.partially_succeeded" and payload["timestamp"] == job["completed_at"]
    shown = {name: value for name, value in job.items() if name not in ("callback", "updated_at")}
    assert {name: payload["data"][name] for name in shown} == shown  # the job body as GET shows it
    assert Webhook(SECRET).verify(first.body, first.headers)["data"]["id"] == job["id"]


def test_a_pending_webhook_is_delivered_by_a_restarted_worker(hooked: Stack, receiver: Receiver) -> None:
    api = hooked.client("key-a")
    receiver.answers["restart"] = [503]  # until the worker is killed
    job_id = api.submit(a_job(receiver.url("restart")))["id"]
    wait_for(lambda: api.job(job_id)["callback"]["attempts"] >= 1, timeout=90, what="a first attempt")
    hooked.kill("worker")
    refused = api.job(job_id)["callback"]
    assert refused["status"] == "pending" and refused["last_error"] == "the receiver answered 503"
    receiver.answers["restart"] = [200]
    hooked.start("worker")
    job = delivered(api, job_id)
    assert job["callback"]["attempts"] > refused["attempts"]
    Webhook(SECRET).verify(receiver.got("restart")[-1].body, receiver.got("restart")[-1].headers)


@pytest.mark.parametrize("url, code", [("ftp://example.com/hook", "invalid_callback_url"),
                                       ("not a url", "invalid_callback_url"),
                                       ("https://example.com/" + "a" * 2029, "field_too_long")])
def test_a_callback_url_that_is_not_http_is_refused(hooked: Stack, url: str, code: str) -> None:
    resp = hooked.client("key-a").post("/v1/jobs", json_body=a_job(url))
    assert resp.status == 400 and resp.body["error"]["code"] == code, resp.body


def test_a_tenant_without_a_secret_may_not_name_a_callback(hooked: Stack, receiver: Receiver) -> None:
    resp = hooked.client("key-b").post("/v1/jobs", json_body=a_job(receiver.url("b")))
    assert resp.status == 400 and resp.body["error"]["code"] == "webhook_secret_missing", resp.body


def produce_request(stack: Stack, job_id: str, callback_url: str) -> None:
    """A one-record job produced straight to Kafka, naming ``callback_url``."""
    request = JobRequest(job_id=job_id, tenant="tenant-a", type="resources", action="post", parts=1,
                         callback_url=callback_url)
    part = RecordPart(job_id=job_id, part=0, records=[{"type": "machine", "attributes": {"name": "lathe"}}])
    produce(stack.brokers, TopicNames(stack.prefix).job_events,
            [(job_id.encode(), encode(request)), (job_id.encode(), encode(part))])


def test_a_job_produced_to_kafka_posts_its_webhook(hooked: Stack, receiver: Receiver) -> None:
    job_id = "produced-with-callback"
    produce_request(hooked, job_id, receiver.url("produced"))
    wait_for(lambda: receiver.got("produced"), timeout=60, what="the produced job's webhook")
    payload = Webhook(SECRET).verify(receiver.got("produced")[0].body, receiver.got("produced")[0].headers)
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job_id


@pytest.fixture(scope="module")
def denying(make_stack: Callable[..., Stack]) -> Stack:
    """A stack that sends webhooks to public addresses only."""
    return make_stack(BULKJOBS_WEBHOOK_SECRETS=f"tenant-a={SECRET}", BULKJOBS_WEBHOOK_DENY_PRIVATE="1",
                      BULKJOBS_WEBHOOK_BACKOFF="0.5", BULKJOBS_WEBHOOK_BACKOFF_CAP="1").start_all()


def test_deny_private_refuses_a_loopback_callback_at_submit(denying: Stack) -> None:
    api = denying.client("key-a")
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook"):
        resp = api.post("/v1/jobs", json_body=a_job(url))
        assert resp.status == 400 and resp.body["error"]["code"] == "callback_url_not_allowed", resp.body


def test_deny_private_refuses_a_loopback_callback_at_delivery(denying: Stack, receiver: Receiver) -> None:
    """A job produced to Kafka is not checked by the API: the worker refuses to send its webhook."""
    api = denying.client("key-a")
    produce_request(denying, "produced-to-loopback", receiver.url("denied"))
    callback = wait_for(lambda: (r := api.get("/v1/jobs/produced-to-loopback")).status == 200
                        and r.body["callback"]["attempts"] >= 2 and r.body["callback"],
                        timeout=60, what="two refused attempts")
    assert callback["status"] == "pending" and "is not a public address" in callback["last_error"]
    assert receiver.got("denied") == []
