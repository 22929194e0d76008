"""Publishing job requests and commands to Kafka from the API (acks=all, bounded in flight)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer

from bulkjobs.api.spool import BatchSpool
from bulkjobs.clock import utc_now
from bulkjobs.errors import Unavailable
from bulkjobs.settings import Settings
from bulkjobs.streams.topics import JobCommand, JobSubmitted, RecordBatch, TopicNames, decode, encode

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # aiokafka has no backpressure of its own


class JobPublisher:
    def __init__(self, settings: Settings) -> None:
        self.names = TopicNames(settings.topic_prefix)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_brokers,
            acks="all",
            # One message per producer batch: after a batch of several records Tansu reports a
            # too-low end offset, which cuts catch-up barriers short. Batch messages are large,
            # so little is lost.
            max_batch_size=1,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def submit(self, submitted: JobSubmitted, spool: BatchSpool | None) -> None:
        """Publish the job's totals, then its batches (an export has none); return once the
        broker has them all. A definition's batches are marked to be held for its runs."""
        try:
            await self.producer.send_and_wait(
                self.names.job_events, encode(submitted), key=submitted.job_id.encode()
            )
        except Exception as exc:
            raise Unavailable(f"the job could not be written to Kafka: {exc}") from None
        if spool is None:
            return
        try:
            await self._send_batches(spool, hold=submitted.schedule is not None)
        except Exception as exc:
            log.exception("job %s: batches could not be written; failing it", submitted.job_id)
            reason = f"the job's records could not all be written to Kafka: {exc}"
            await self.command(submitted.job_id, submitted.tenant, "fail", reason)
            raise Unavailable(reason) from None

    async def _send_batches(self, spool: BatchSpool, hold: bool) -> None:
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        pending: set[asyncio.Future[object]] = set()
        for partition, payload in spool:
            if hold:  # rare (a scheduled import): re-encoding its batches costs little
                payload = encode(replace(RecordBatch(**decode(payload)), hold=True))
            await slots.acquire()
            future = await self.producer.send(self.names.batches, payload, partition=partition)
            future.add_done_callback(lambda _: slots.release())
            pending.add(future)
        if pending:
            await asyncio.gather(*pending)

    async def command(self, job_id: str, tenant: str, kind: str, reason: str | None = None,
                      changes: dict[str, Any] | None = None) -> None:
        command = JobCommand(job_id=job_id, tenant=tenant, kind=kind, at=utc_now(), reason=reason, changes=changes)
        try:
            await self.producer.send_and_wait(self.names.job_events, encode(command), key=job_id.encode())
        except Exception as exc:
            raise Unavailable(f"the request could not be written to Kafka: {exc}") from None
