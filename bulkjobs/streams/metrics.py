"""The worker's metrics, served on ``BULKJOBS_METRICS_PORT``: the batches handled by what became
of them, the records applied by outcome, how long applying a batch takes, dead letters, the
agents' consumer lag per partition, the live ids in the object index, what loading the
index read, the snapshots written, the held batches sent on by where they were read, and the
completion webhooks' attempts by outcome.

Counted per batch, never per record: a batch's records are counted from its counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from prometheus_client import Counter, Gauge, Histogram

from bulkjobs.domain.counts import Counts
from bulkjobs.metrics import Consumer, LagGauge, Partition, consumer_lag, new_registry
from bulkjobs.streams.effects import Message

REGISTRY = new_registry()

# What became of a message of the batches topic (the label of BATCHES).
APPLIED = "applied"
DUPLICATE = "duplicate"  # redelivered, already applied: only its BatchDone is sent again
STOPPED = "stopped"  # its job is cancelled, failed or deleted: skipped
PARKED = "parked"  # its job holds its batches (suspended, or a definition)
UNREADABLE = "unreadable"  # not a record batch: dead-lettered
ERROR = "error"  # handling it raised: its job fails
BATCH_OUTCOMES = (APPLIED, DUPLICATE, STOPPED, PARKED, UNREADABLE, ERROR)
RECORD_OUTCOMES = tuple(field.name for field in fields(Counts) if field.name != "processed")

BATCHES = Counter("bulkjobs_worker_batches", "Messages of the batches topic handled, by what became of them",
                  ["outcome"], registry=REGISTRY)
RECORDS = Counter("bulkjobs_worker_records_applied", "Records of the batches applied, by outcome", ["outcome"],
                  registry=REGISTRY)
APPLY_SECONDS = Histogram("bulkjobs_worker_batch_apply_seconds", "Seconds from a batch's arrival to its BatchDone "
                          "acknowledged, for the batches applied", registry=REGISTRY)
DEAD_LETTERS = Counter("bulkjobs_worker_dead_letters", "Messages set aside in the dead-letters topic, by the "
                       "topic they came from", ["topic"], registry=REGISTRY)
CONSUMER_LAG = LagGauge("bulkjobs_worker_consumer_lag", "Messages of each partition this worker is assigned that it "
                        "has not handled yet (batches and job events)", REGISTRY)
LIVE_IDS = Gauge("bulkjobs_worker_live_ids", "Live ids in the worker's object index (the partitions it reads), by "
                 "kind", ["kind"], registry=REGISTRY)
# What became of an attempt to deliver a completion webhook (the label of WEBHOOK_ATTEMPTS).
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_RETRIED = "retried"  # not 2xx, no answer, refused: tried again after the backoff
WEBHOOK_GAVE_UP = "gave_up"  # failed, and the job ended BULKJOBS_WEBHOOK_MAX_AGE ago: the last attempt
WEBHOOK_OUTCOMES = (WEBHOOK_DELIVERED, WEBHOOK_RETRIED, WEBHOOK_GAVE_UP)
WEBHOOK_ATTEMPTS = Counter("bulkjobs_worker_webhook_attempts", "Attempts to deliver a completion webhook, by outcome",
                           ["outcome"], registry=REGISTRY)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(_outcome)

# What loading the index cost (a restart or a rebalance reads what is live, not the history),
# and the snapshots this worker wrote.
CHANGES_READ = Counter("bulkjobs_worker_changes_read", "Messages and bytes of the changes topic read into the "
                       "object index (not its own writes)", ["unit"], registry=REGISTRY)
SNAPSHOT_READ = Counter("bulkjobs_worker_snapshot_read", "Messages and bytes of the snapshots topic read to "
                        "restore partitions of the object index", ["unit"], registry=REGISTRY)
SNAPSHOTS = Counter("bulkjobs_worker_snapshots", "Snapshots of a partition of the object index written",
                    registry=REGISTRY)
# Where a held batch sent on (to its resumed job, or to a run of its definition) was read from.
FROM_HELD = "held"  # its copy in the held topic
FROM_BATCHES = "batches"  # the batches topic itself: parked by a version before the held topic
HELD_SENT_ON = Counter("bulkjobs_worker_held_batches_sent_on", "Held batches sent on to be applied (a resumed "
                       "job's, a run's copies), by the topic they were read from", ["source"], registry=REGISTRY)
for _source in (FROM_HELD, FROM_BATCHES):
    HELD_SENT_ON.labels(_source)
SNAPSHOT_SECONDS = Histogram("bulkjobs_worker_snapshot_seconds", "Seconds from the copy of a partition's index to "
                             "its snapshot's manifest acknowledged", registry=REGISTRY)
for _outcome in BATCH_OUTCOMES:
    BATCHES.labels(_outcome)
for _outcome in RECORD_OUTCOMES:
    RECORDS.labels(_outcome)


def batch_handled(outcome: str) -> None:
    BATCHES.labels(outcome).inc()


def batch_applied(counts: Counts, seconds: float) -> None:
    for outcome in RECORD_OUTCOMES:
        if value := getattr(counts, outcome):
            RECORDS.labels(outcome).inc(value)
    APPLY_SECONDS.observe(seconds)


def held_batch_sent_on(source: str) -> None:
    HELD_SENT_ON.labels(source).inc()


def webhook_attempted(error: str | None, gave_up: bool) -> None:
    outcome = WEBHOOK_DELIVERED if error is None else WEBHOOK_GAVE_UP if gave_up else WEBHOOK_RETRIED
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def dead_letter(topic: str) -> None:
    DEAD_LETTERS.labels(topic).inc()


class AgentProgress:
    """The next offset the agents will handle of each partition, for their consumer lag."""

    def __init__(self) -> None:
        self.next: dict[Partition, int] = {}

    def handled(self, message: Message) -> None:
        self.next[(message.topic, message.partition)] = message.offset + 1

    def revoke(self, partitions: set[Partition]) -> None:
        """Forget what was handled of partitions another worker takes: they may come back later."""
        for partition in partitions:
            self.next.pop(partition, None)


async def observe(consumer: Consumer, topics: tuple[str, ...], progress: AgentProgress,
                  live_ids: Callable[[], tuple[int, int]]) -> None:
    """Update the gauges: the lag of the partitions of ``topics`` assigned now, the size of the index."""
    CONSUMER_LAG.show(await consumer_lag(consumer, topics, progress.next))
    objects, relationships = live_ids()
    LIVE_IDS.labels("object").set(objects)
    LIVE_IDS.labels("relationship").set(relationships)
