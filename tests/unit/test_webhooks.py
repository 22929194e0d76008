"""Completion webhooks without a broker or a receiver: the rules (``domain.webhooks``), the
secrets setting, the signature as the ``standardwebhooks`` package verifies it, and the
worker's ``WebhookSender`` with a fake POST, publisher and job states."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook, WebhookVerificationError

from bulkjobs.clock import format_time
from bulkjobs.domain import webhooks
from bulkjobs.domain.jobs import DELETED, PROCESSING, SUCCEEDED, Job
from bulkjobs.errors import BadRequest
from bulkjobs.kafka.topics import CallbackAttempt, JobRequest, TopicNames, encode, job_event_from
from bulkjobs.settings import Settings, new_webhook_secret, parse_webhook_secrets
from bulkjobs.streams import metrics
from bulkjobs.streams.rules import next_job
from bulkjobs.streams.state import JobStates
from bulkjobs.streams.webhooks import MAX_IN_FLIGHT_PER_TENANT, HttpPost, WebhookSender, signed_request

ENDED = datetime(2026, 1, 1, tzinfo=UTC)
AT = format_time(ENDED)
URL = "https://hooks.example.com/bulkjobs"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NAMES = TopicNames("t")


def ended_job(job_id: str = "job-1", tenant: str = "acme", status: str = SUCCEEDED,
              callback: dict[str, Any] | None = None) -> Job:
    details = {"callback": {**webhooks.pending_callback(URL), **(callback or {})}}
    return Job(id=job_id, tenant=tenant, type="resources", action="post", status=status, total=1,
               created_at=AT, completed_at=AT, updated_at=AT, details=details)


# --- the URL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://example.com", "https://example.com:8443/hook?x=1", "HTTPS://Example.com/a", "http://127.0.0.1:9/",
    "http://[::1]:8080/", "https://example.com/" + "a" * (webhooks.MAX_URL_CHARS - 20),
])
def test_a_callback_url_that_is_http_or_https_with_a_host_is_taken(url: str) -> None:
    assert webhooks.check_callback_url(url) == url


@pytest.mark.parametrize("value", [
    "ftp://example.com/", "javascript:alert(1)", "file:///etc/passwd", "http://", "http:///path", "example.com",
    "https://example.com:99999/", "http://example.com:0/", "http://exa mple.com/", "http://example.com/\n",
    "", 42, None, ["http://example.com"],
])
def test_a_callback_url_that_is_not_an_http_url_with_a_host_is_refused(value: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        webhooks.check_callback_url(value)
    assert refused.value.code == webhooks.INVALID_CALLBACK_URL and refused.value.details["field"] == "callback_url"


@pytest.mark.parametrize("length, taken", [(webhooks.MAX_URL_CHARS - 1, True), (webhooks.MAX_URL_CHARS, True),
                                           (webhooks.MAX_URL_CHARS + 1, False)])
def test_a_callback_url_may_have_up_to_2048_characters(length: int, taken: bool) -> None:
    base = "https://example.com/"
    url = base + "a" * (length - len(base))
    if taken:
        assert webhooks.check_callback_url(url) == url
    else:
        with pytest.raises(BadRequest) as refused:
            webhooks.check_callback_url(url)
        assert refused.value.code == "field_too_long" and refused.value.details["limit"] == webhooks.MAX_URL_CHARS


@pytest.mark.parametrize("address, refused", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("169.254.169.254", True),
    ("100.64.0.1", True), ("0.0.0.0", True), ("::1", True), ("fe80::1", True), ("fc00::1", True),
    ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", True), ("224.0.0.1", True),
    ("8.8.8.8", False), ("93.184.216.34", False), ("2606:4700:4700::1111", False), ("::ffff:8.8.8.8", False),
])
def test_only_global_addresses_are_allowed_when_private_targets_are_denied(address: str, refused: bool) -> None:
    assert webhooks.refused_address(address) is refused


@pytest.mark.parametrize("url, address", [("http://127.0.0.1:80/", "127.0.0.1"), ("http://[::1]/", "::1"),
                                          ("http://localhost/", None), ("https://example.com/", None)])
def test_a_literal_address_is_read_from_the_url(url: str, address: str | None) -> None:
    found = webhooks.literal_address(url)
    assert (str(found) if found is not None else None) == address


# --- when attempts are due, and how they are folded ------------------------------------------------


@pytest.mark.parametrize("attempts, seconds", [(0, 0), (1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (500, 3600)])
def test_the_backoff_doubles_from_the_initial_delay_up_to_the_cap(attempts: int, seconds: float) -> None:
    assert webhooks.backoff(attempts, 5, 3600) == seconds


def test_the_first_attempt_is_due_when_the_job_ends() -> None:
    job = ended_job()
    assert webhooks.next_attempt_at(job, 5, 3600) == ENDED
    assert webhooks.is_due(job, ENDED, 5, 3600)
    assert not webhooks.is_due(job, ENDED - timedelta(milliseconds=1), 5, 3600)


@pytest.mark.parametrize("after, due", [(timedelta(seconds=9.999), False), (timedelta(seconds=10), True),
                                        (timedelta(seconds=11), True)])
def test_a_retry_is_due_after_the_backoff_since_the_last_attempt(after: timedelta, due: bool) -> None:
    last = ENDED + timedelta(seconds=5)
    job = ended_job(callback={"attempts": 2, "last_attempt_at": format_time(last),
                              "last_error": "the receiver answered 500"})
    assert webhooks.is_due(job, last + after, 5, 3600) is due


@pytest.mark.parametrize("job", [
    ended_job(status=PROCESSING), ended_job(status=DELETED), ended_job(callback={"status": webhooks.DELIVERED}),
    Job(id="job-1", tenant="acme", status=SUCCEEDED, completed_at=AT),
])
def test_no_attempt_is_due_for_a_job_running_deleted_delivered_or_without_a_callback(job: Job) -> None:
    assert webhooks.next_attempt_at(job, 5, 3600) is None
    assert not webhooks.delivering(job)


@pytest.mark.parametrize("age, gives_up", [(86399.999, False), (86400, True), (90000, True)])
def test_delivery_gives_up_once_the_job_ended_max_age_ago(age: float, gives_up: bool) -> None:
    assert webhooks.gives_up(ended_job(), ENDED + timedelta(seconds=age), 86400) is gives_up


@pytest.mark.parametrize("error, gave_up, status", [(None, False, webhooks.DELIVERED),
                                                     ("the receiver answered 500", False, webhooks.PENDING),
                                                     ("the receiver answered 500", True, webhooks.FAILED)])
def test_an_attempt_is_folded_into_the_callback(error: str | None, gave_up: bool, status: str) -> None:
    changed = webhooks.attempted(ended_job(), 1, "2026-01-01T00:00:01.000Z", error, gave_up)
    assert changed is not None and changed.details is not None
    assert changed.details["callback"] == {"url": URL, "status": status, "attempts": 1,
                                           "last_attempt_at": "2026-01-01T00:00:01.000Z", "last_error": error}


@pytest.mark.parametrize("job, attempt", [(ended_job(callback={"attempts": 1}), 1), (ended_job(), 2),
                                          (ended_job(callback={"status": webhooks.FAILED}), 1),
                                          (Job(id="job-1", status=SUCCEEDED), 1)])
def test_an_attempt_counted_before_or_for_no_pending_callback_changes_nothing(job: Job, attempt: int) -> None:
    assert webhooks.attempted(job, attempt, AT, None, False) is None


def test_a_long_error_is_cut() -> None:
    changed = webhooks.attempted(ended_job(), 1, AT, "x" * 10_000, False)
    assert changed is not None and changed.details is not None
    assert len(changed.details["callback"]["last_error"]) == webhooks.MAX_ERROR_CHARS


def test_the_tracker_folds_a_callback_attempt_and_a_producer_request_names_its_callback() -> None:
    attempt = CallbackAttempt(job_id="job-1", attempt=1, at=AT)
    folded = next_job(ended_job(), job_event_from(b"job-1", encode(attempt)), AT)
    assert folded is not None and folded.details is not None
    assert folded.details["callback"]["status"] == webhooks.DELIVERED
    request = JobRequest(job_id="job-2", tenant="acme", type="resources", action="post", parts=1, callback_url=URL)
    requested = next_job(Job(id="job-2"), job_event_from(b"job-2", encode(request)), AT)
    assert requested is not None and requested.details == {"callback": webhooks.pending_callback(URL)}


def test_a_producer_request_with_a_bad_callback_url_is_refused() -> None:
    request = JobRequest(job_id="job-2", tenant="acme", type="resources", action="post", parts=1,
                         callback_url="ftp://example.com/")
    with pytest.raises(ValueError, match="http or https"):
        job_event_from(b"job-2", encode(request))


# --- secrets and signatures -------------------------------------------------------------------------


def test_webhook_secrets_are_read_per_tenant_and_a_generated_one_parses() -> None:
    generated = new_webhook_secret()
    assert parse_webhook_secrets(f" acme={SECRET}, dev={generated} ,") == {"acme": SECRET, "dev": generated}
    assert Settings.from_env({"BULKJOBS_WEBHOOK_SECRETS": f"acme={SECRET}",
                              "BULKJOBS_WEBHOOK_DENY_PRIVATE": "1"}).webhook_deny_private


@pytest.mark.parametrize("text", ["acme", "acme=", "=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "acme=secret",
                                  "acme=whsec_c2hvcnQ="])  # the last: 5 bytes, too short a key
def test_a_malformed_webhook_secret_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="BULKJOBS_WEBHOOK_SECRETS"):
        parse_webhook_secrets(text)


def test_a_signed_webhook_verifies_with_the_standardwebhooks_package() -> None:
    moment = datetime.now(UTC)
    headers, body = signed_request(ended_job(), SECRET, moment, 3600)
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.succeeded" and payload["timestamp"] == AT
    assert payload["data"]["id"] == "job-1" and payload["data"]["callback"]["status"] == webhooks.PENDING
    assert headers["webhook-id"] == "job-1.succeeded" and payload["data"]["expires_at"] is not None
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"job-1", b"job-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


# --- the sender -------------------------------------------------------------------------------------


class Fakes:
    """A worker's webhook sender wired to fakes: its POSTs wait on ``answer`` when it is set."""

    def __init__(self, settings: Settings | None = None, owned: set[int] | None = None) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.answer: asyncio.Event | None = None
        self.error: str | None = None
        self.job_states = JobStates(lambda on_message: None)  # type: ignore[arg-type,return-value]
        self.owned = owned if owned is not None else {0, 1}
        self.sender = WebhookSender(publish=self.publish, topics=NAMES, job_states=self.job_states,
                                    owned=self.owns, settings=settings or Settings(webhook_secrets={"acme": SECRET}),
                                    post=self.post, moment=lambda: ENDED + timedelta(seconds=1))

    async def owns(self) -> set[int]:
        return self.owned

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      partition: int | None = None) -> int:
        self.events.append(orjson.loads(value))
        return 0

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        self.posts.append((url, headers, body))
        if self.answer is not None:
            await self.answer.wait()
        return self.error

    async def settle(self) -> None:
        await asyncio.gather(*self.sender.tasks.values())


def attempts_counted(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("bulkjobs_worker_webhook_attempts_total", {"outcome": outcome}) or 0.0


async def test_a_due_webhook_is_posted_once_until_the_tracker_folds_its_attempt() -> None:
    fakes = Fakes()
    fakes.error = "the receiver answered 500"
    fakes.job_states.put(ended_job(), 0)
    retried = attempts_counted("retried")
    await fakes.sender.look()
    await fakes.settle()
    assert attempts_counted("retried") == retried + 1
    await fakes.sender.look()  # the attempt is not folded yet: no second POST
    await fakes.settle()
    assert [url for url, _, _ in fakes.posts] == [URL]
    assert fakes.events == [{"kind": "callback_attempt", "job_id": "job-1", "attempt": 1,
                             "at": "2026-01-01T00:00:01.000Z", "error": "the receiver answered 500", "gave_up": False}]
    folded = next_job(fakes.job_states.get("job-1"), CallbackAttempt(**fakes.events[0]), AT)
    assert folded is not None
    fakes.job_states.put(folded, 0)
    await fakes.sender.look()  # folded, but the 5 s backoff has not passed
    assert len(fakes.posts) == 1


async def test_a_slow_tenant_fills_only_its_own_slots() -> None:
    fakes = Fakes(Settings(webhook_secrets={"acme": SECRET, "other": SECRET}))
    fakes.answer = asyncio.Event()
    for n in range(MAX_IN_FLIGHT_PER_TENANT + 2):
        fakes.job_states.put(ended_job(f"slow-{n}"), 0)
    fakes.job_states.put(ended_job("other-1", tenant="other"), 1)
    await fakes.sender.look()
    await asyncio.sleep(0)
    posted = [orjson.loads(body)["data"]["id"] for _, _, body in fakes.posts]
    assert len([job for job in posted if job.startswith("slow-")]) == MAX_IN_FLIGHT_PER_TENANT
    assert "other-1" in posted
    fakes.answer.set()
    await fakes.settle()


async def test_the_webhooks_of_other_workers_partitions_and_of_tenants_without_a_secret() -> None:
    fakes = Fakes(owned={1})
    fakes.job_states.put(ended_job("theirs"), 0)
    fakes.job_states.put(ended_job("no-secret", tenant="nobody"), 1)
    await fakes.sender.look()
    await fakes.settle()
    assert fakes.posts == []
    [event] = fakes.events
    assert event["job_id"] == "no-secret" and "has no webhook secret" in event["error"]


# --- the worker's HTTP client, against a local receiver ------------------------------------------------


@pytest.fixture
async def receiver() -> Any:
    """A local receiver: /ok answers 204, /fail 500, /moved a redirect to /ok."""
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/fail", fail)
    app.router.add_post("/moved", moved)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


@pytest.mark.parametrize("path, deny_private, error", [
    ("/ok", False, None),
    ("/fail", False, "the receiver answered 500"),
    ("/moved", False, "the receiver answered 302 (redirects are not followed)"),
    ("/ok", True, "the callback host '127.0.0.1' is 127.0.0.1, which is not a public address"),
])
async def test_the_http_client_posts_without_following_redirects_or_reaching_private_hosts(
        receiver: Any, path: str, deny_private: bool, error: str | None) -> None:
    post = HttpPost(deny_private)
    try:
        outcome = await post(f"http://127.0.0.1:{receiver.port}{path}", {"webhook-id": "x"}, b"{}")
    finally:
        await post.close()
    assert outcome == error or (error is not None and outcome is not None and outcome.startswith(error))


async def test_a_name_is_checked_after_it_is_resolved_and_only_checked_addresses_are_connected_to(
        receiver: Any) -> None:
    """``localhost`` is a name, resolved by the client's resolver: refused as loopback, though
    the same URL reaches the receiver when private targets are allowed."""
    url = f"http://localhost:{receiver.port}/ok"
    denied, allowed = HttpPost(True), HttpPost(False)
    try:
        refusal = await denied(url, {}, b"{}")
        assert refusal is not None and "is not a public address" in refusal and "'localhost'" in refusal
        assert await allowed(url, {}, b"{}") is None
    finally:
        await denied.close()
        await allowed.close()


def test_a_deleted_job_leaves_the_pending_callbacks() -> None:
    states = JobStates(lambda on_message: None)  # type: ignore[arg-type,return-value]
    states.put(ended_job(), 1)
    assert [job.id for job in states.callbacks()] == ["job-1"]
    states.put(replace(ended_job(), status=DELETED), 1)  # a DELETE, or the job's expiry
    assert states.callbacks() == []
