"""Publishing job requests and commands to Kafka from the API (acks=all, bounded in flight).

A job's batches follow its ``JobSubmitted`` (marked ``uploading``). While they are being sent,
a ``beat`` command goes to the job's events every fifth of ``BULKJOBS_UPLOAD_TIMEOUT``; once the
broker has them all, a ``sealed`` command. An API that dies in between stops beating, and the
worker's upload watch fails the job as ``upload_interrupted`` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from bulkjobs.api.spool import BatchSpool
from bulkjobs.clock import utc_now
from bulkjobs.domain.dry_run import DRY_RUN
from bulkjobs.errors import Unavailable
from bulkjobs.kafka import clients
from bulkjobs.kafka.topics import (
    JobCommand,
    JobSubmitted,
    RecordBatch,
    TopicNames,
    decode,
    encode,
)
from bulkjobs.logs import about_job
from bulkjobs.settings import Settings

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # aiokafka has no backpressure of its own


class JobPublisher:
    def __init__(self, settings: Settings) -> None:
        self.names = TopicNames(settings.topic_prefix)
        self.beat_interval = settings.upload_timeout / 5
        self.producer = clients.producer(settings.kafka_brokers)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def reachable(self) -> None:
        """Return once the broker has answered a metadata request of the producer's client; raise
        if it cannot be reached (the caller bounds the wait)."""
        await self.producer.client.fetch_all_metadata()

    async def submit(self, submitted: JobSubmitted, spool: BatchSpool | None) -> None:
        """Publish the job's totals, then its batches (an export has none), then seal it; return
        once the broker has them all. A definition's batches are marked to be held for its runs."""
        submitted = replace(submitted, uploading=spool is not None)
        try:
            await self.producer.send_and_wait(
                self.names.job_events, encode(submitted), key=submitted.job_id.encode()
            )
        except Exception as exc:
            raise Unavailable(f"the job could not be written to Kafka: {exc}") from None
        if spool is None:
            return
        try:
            await self._upload(submitted, spool)
        except Exception as exc:
            log.exception("job %s: batches could not be written; failing it", submitted.job_id,
                          extra=about_job(submitted.job_id, submitted.tenant))
            reason = f"the job's records could not all be written to Kafka: {exc!r}"
            await self.command(submitted.job_id, submitted.tenant, "fail", reason)
            raise Unavailable(reason) from None

    async def _upload(self, submitted: JobSubmitted, spool: BatchSpool) -> None:
        """Send the batches while beating; seal the job once the broker has them all. A beat or
        seal the broker does not take in time ends the upload: the job might be judged
        interrupted, so it must not be answered 202."""
        sending = asyncio.ensure_future(self._send_batches(
            spool, hold=submitted.schedule is not None, dry_run=bool((submitted.details or {}).get(DRY_RUN))))
        beating = asyncio.ensure_future(self._beat(submitted.job_id, submitted.tenant))
        try:
            await asyncio.wait({sending, beating}, return_when=asyncio.FIRST_COMPLETED)
            if beating.done():
                beating.result()  # raises why the beats stopped
            await sending
        finally:
            for task in (sending, beating):
                task.cancel()
        await self._upload_command(submitted.job_id, submitted.tenant, "sealed")

    async def _beat(self, job_id: str, tenant: str) -> None:
        while True:
            await asyncio.sleep(self.beat_interval)
            await self._upload_command(job_id, tenant, "beat")

    async def _upload_command(self, job_id: str, tenant: str, command: str) -> None:
        """A beat or the seal, acknowledged within two beat intervals (so the job is never
        silent for a whole upload timeout, 5 intervals, while its API lives)."""
        value = self._command_value(job_id, tenant, command)
        limit = 2 * self.beat_interval
        try:
            await asyncio.wait_for(self.producer.send_and_wait(self.names.job_events, value, key=job_id.encode()),
                                   limit)
        except TimeoutError:
            raise TimeoutError(f"the broker took no {command} of the job within {limit:.1f} s") from None

    async def _send_batches(self, spool: BatchSpool, hold: bool, dry_run: bool) -> None:
        """Send the spooled batches, marked to be held or applied as a dry run: an envelope may
        give its schedule or its dry run after its records were spooled."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        pending: set[asyncio.Future[object]] = set()
        for partition, payload in spool:
            if hold or dry_run:  # rare (a scheduled import, a dry run): re-encoding its batches costs little
                payload = encode(replace(RecordBatch(**decode(payload)), hold=hold, dry_run=dry_run))
            await slots.acquire()
            future = await self.producer.send(self.names.batches, payload, partition=partition)
            future.add_done_callback(lambda _: slots.release())
            pending.add(future)
        if pending:
            await asyncio.gather(*pending)

    @staticmethod
    def _command_value(job_id: str, tenant: str, command: str, reason: str | None = None,
                       changes: dict[str, Any] | None = None) -> bytes:
        return encode(JobCommand(job_id=job_id, tenant=tenant, kind=command, at=utc_now(), reason=reason,
                                 changes=changes))

    async def command(self, job_id: str, tenant: str, command: str, reason: str | None = None,
                      changes: dict[str, Any] | None = None) -> None:
        value = self._command_value(job_id, tenant, command, reason, changes)
        try:
            await self.producer.send_and_wait(self.names.job_events, value, key=job_id.encode())
        except Exception as exc:
            raise Unavailable(f"the request could not be written to Kafka: {exc}") from None
