"""What the worker's orchestration is handed to reach Kafka: the message an agent consumed, and
the callables that send (the way cosmicpython's bootstrap hands its handlers a message bus).

``worker.py`` makes them from the Faust topics; unit tests hand in fakes that record what was
sent, in order. Topics are named by their names (``kafka.topics.TopicNames``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bulkjobs.kafka.topics import BatchDone, BatchParked, CallbackAttempt, JobCommand, JobSubmitted, encode


@dataclass(frozen=True)
class Message:
    """One consumed message, as an agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Publish(Protocol):
    """Send a value and wait for the broker's ack, retrying until it comes (nothing is ever
    dropped); the offset where it landed."""

    async def __call__(self, topic: str, value: bytes, *, key: bytes | None = None,
                       partition: int | None = None) -> int: ...


class Send(Protocol):
    """Hand a value (None: a tombstone) to the producer, without waiting for the ack or retrying."""

    async def __call__(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                       partition: int | None = None) -> None: ...


DeadLetter = Callable[[Message, str], Awaitable[None]]  # set a message aside with the reason, once
Owned = Callable[[], Awaitable[set[int]]]  # the job-events partitions this worker owns, their jobs known


async def publish_job_event(publish: Publish, topic: str,
                            event: JobSubmitted | BatchDone | JobCommand | BatchParked | CallbackAttempt) -> None:
    """Publish an event to a job's events, keyed by its id (so it lands on the job's partition)."""
    await publish(topic, encode(event), key=event.job_id.encode())


async def request_fail(publish: Publish, topic: str, job_id: str, tenant: str, reason: str, at: str) -> None:
    """Ask the job's tracker to fail it (from outside the tracker: its events stay in order)."""
    await publish_job_event(publish, topic, JobCommand(job_id=job_id, tenant=tenant, kind="fail", at=at, reason=reason))
