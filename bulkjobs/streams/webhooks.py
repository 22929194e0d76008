"""The webhook sender: delivers the completion webhooks of the jobs of the job-events partitions
this worker owns, as the ``Scheduler`` fires their definitions.

A timer's look (``look``) finds the ended jobs whose callback is pending and due
(``domain.webhooks.is_due``) and starts each delivery as a background task, at most
``MAX_IN_FLIGHT`` at once and ``MAX_IN_FLIGHT_PER_TENANT`` per tenant, so a slow or dead
receiver never holds up the pipeline, the timer, or other tenants' webhooks. Each attempt's
outcome is published as a ``CallbackAttempt`` job event; the tracker folds it into the job's
``callback`` state, which lives in the job's status, so delivery survives restarts. Until the
tracker has folded an attempt, the job is not attempted again.

The body is ``{"type": "job.<status>", "timestamp", "data": <job body>}``, signed as Standard
Webhooks do (the ``standardwebhooks`` package's ``Webhook.sign``) with the tenant's secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from math import floor

import aiohttp
import orjson
from standardwebhooks import Webhook

from bulkjobs.clock import format_time
from bulkjobs.domain import webhooks
from bulkjobs.domain.jobs import Job, public_body
from bulkjobs.kafka.topics import CallbackAttempt, TopicNames
from bulkjobs.settings import Settings
from bulkjobs.streams import metrics
from bulkjobs.streams.effects import Owned, Publish, publish_job_event
from bulkjobs.streams.state import JobStates
from bulkjobs.targets import CheckingResolver, PrivateTarget, check_literal

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # deliveries at once, all tenants together
MAX_IN_FLIGHT_PER_TENANT = 8  # deliveries at once of one tenant's jobs
TIMEOUT = 10.0  # seconds a receiver has to answer, connection included
USER_AGENT = "bulkjobs-webhooks"

Post = Callable[[str, dict[str, str], bytes], Awaitable[str | None]]  # url, headers, body -> None or why it failed


def _utc_moment() -> datetime:
    return datetime.now(UTC)


def signed_request(job: Job, secret: str, moment: datetime, retention: int) -> tuple[dict[str, str], bytes]:
    """The webhook's headers and body for the job as it is now, signed at ``moment``."""
    body = orjson.dumps({"type": webhooks.event_type(job), "timestamp": job.completed_at or format_time(moment),
                         "data": public_body(job, retention=retention)})
    message_id = webhooks.webhook_id(job)
    signature = Webhook(secret).sign(message_id, moment, body.decode())
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": message_id,
               "webhook-timestamp": str(floor(moment.timestamp())), "webhook-signature": signature}
    return headers, body


class HttpPost:
    """POSTs a webhook with one ``aiohttp`` session of the worker: no redirect followed, a
    ``TIMEOUT``, and with ``deny_private`` only to global addresses (``bulkjobs.targets``)."""

    def __init__(self, deny_private: bool) -> None:
        self.deny_private = deny_private
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the worker's event loop, on first use
            connector = aiohttp.TCPConnector(resolver=CheckingResolver() if self.deny_private else None,
                                             limit=MAX_IN_FLIGHT)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        return self._session

    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        try:
            if self.deny_private:
                check_literal(url)
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                return f"the receiver answered {response.status}" + (
                    " (redirects are not followed)" if 300 <= response.status < 400 else "")
        except PrivateTarget as exc:
            return str(exc)
        except TimeoutError:
            return f"the receiver did not answer within {TIMEOUT:.0f} s"
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, PrivateTarget) else exc
            return f"the request failed: {cause}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class WebhookSender:
    def __init__(self, *, publish: Publish, topics: TopicNames, job_states: JobStates, owned: Owned,
                 settings: Settings, post: Post, moment: Callable[[], datetime] = _utc_moment) -> None:
        self.publish, self.topics, self.job_states, self.owned = publish, topics, job_states, owned
        self.settings, self.post, self.moment = settings, post, moment
        self.tasks: dict[str, asyncio.Task[None]] = {}  # job -> its delivery under way
        self.per_tenant: Counter[str] = Counter()
        self.published: dict[str, int] = {}  # job -> the attempt last published, until the tracker folds it

    async def look(self) -> None:
        """Start the due deliveries of the partitions this worker owns, within the caps."""
        owned = await self.owned()
        moment = self.moment()
        for job in self.job_states.callbacks():
            if len(self.tasks) >= MAX_IN_FLIGHT:
                return
            if (job.id in self.tasks or self.per_tenant[job.tenant] >= MAX_IN_FLIGHT_PER_TENANT
                    or self.job_states.partitions.get(job.id) not in owned or self._unfolded(job)
                    or not webhooks.is_due(job, moment, self.settings.webhook_backoff,
                                           self.settings.webhook_backoff_cap)):
                continue
            self.per_tenant[job.tenant] += 1
            self.tasks[job.id] = asyncio.create_task(self._deliver(job))

    def _unfolded(self, job: Job) -> bool:
        """Whether the tracker has not yet folded the attempt last published for the job."""
        callback = webhooks.callback_of(job) or {}
        published = self.published.get(job.id)
        if published is None:
            return False
        if int(callback.get("attempts") or 0) >= published:
            del self.published[job.id]
            return False
        return True

    async def _deliver(self, job: Job) -> None:
        """One attempt: POST the signed webhook and publish the outcome; never raises."""
        try:
            try:
                error = await self._attempt(job)
            except Exception as exc:  # a bug of ours fails this attempt, not the sender
                log.exception("the webhook of job %s could not be sent", job.id)
                error = f"the webhook could not be sent: {exc!r}"
            at = self.moment()
            attempt = int((webhooks.callback_of(job) or {}).get("attempts") or 0) + 1
            gave_up = error is not None and webhooks.gives_up(job, at, self.settings.webhook_max_age)
            event = CallbackAttempt(job_id=job.id, attempt=attempt, at=format_time(at), error=error, gave_up=gave_up)
            await publish_job_event(self.publish, self.topics.job_events, event)
            self.published[job.id] = attempt
            metrics.webhook_attempted(error, gave_up)
        except Exception:
            log.exception("the outcome of a webhook of job %s could not be published; it is tried again", job.id)
        finally:
            self.per_tenant[job.tenant] -= 1
            if self.per_tenant[job.tenant] <= 0:
                del self.per_tenant[job.tenant]
            del self.tasks[job.id]

    async def _attempt(self, job: Job) -> str | None:
        """POST the webhook: None once delivered, else why not."""
        secret = self.settings.webhook_secrets.get(job.tenant)
        if secret is None:
            return f"the tenant {job.tenant!r} has no webhook secret (BULKJOBS_WEBHOOK_SECRETS)"
        url = (webhooks.callback_of(job) or {})["url"]
        headers, body = signed_request(job, secret, self.moment(), self.settings.job_retention)
        return await self.post(url, headers, body)
