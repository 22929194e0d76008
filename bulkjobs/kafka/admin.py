"""Creating bulkjobs' topics on a broker with their retention (idempotent; every entry point calls it).

A topic that exists keeps its config: retention set here applies to topics created from now on.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from bulkjobs.kafka.topics import TopicNames
from bulkjobs.settings import Settings

log = logging.getLogger(__name__)


def retention(seconds: int) -> dict[str, str]:
    """A topic's config keeping its records ``seconds`` (0: for ever)."""
    return {"retention.ms": str(seconds * 1000) if seconds > 0 else "-1"}


async def ensure_topics(settings: Settings, attempts: int = 60) -> None:
    names = TopicNames(settings.topic_prefix)
    latest = {"cleanup.policy": "compact"}  # keyed snapshots: only the latest per key matters
    wanted = {
        names.job_events: retention(settings.topic_retention),
        names.batches: retention(settings.batches_retention),
        names.changes: retention(settings.topic_retention),  # finite only because snapshots exist
        names.status: latest,
        names.workers: latest,
        names.dead_letters: retention(settings.topic_retention),
        names.snapshots: latest,
        names.held: latest,  # held batches' copies, until sent on or dropped by a tombstone
    }
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor,
                         topic_configs=config)
                for name, config in wanted.items()
                if name not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise
            log.info("broker %s not reachable yet; retrying", settings.kafka_brokers)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
