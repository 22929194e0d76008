"""Creating bulkjobs' topics on a broker with their retention (idempotent; every entry point calls it)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from bulkjobs.kafka.topics import TopicNames
from bulkjobs.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, attempts: int = 60) -> None:
    names = TopicNames(settings.topic_prefix)
    forever = {"retention.ms": "-1"}  # what was accepted, and the state rebuilt from it, is never dropped
    latest = {"cleanup.policy": "compact"}  # keyed snapshots: only the latest per key matters
    wanted = {
        names.job_events: forever,
        names.batches: forever,
        names.changes: forever,
        names.status: latest,
        names.workers: latest,
        names.dead_letters: forever,
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
