"""Creating bulkjobs' topics on a broker (idempotent; every entry point calls it at start)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from bulkjobs.settings import Settings
from bulkjobs.streams.topics import TopicNames

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, attempts: int = 60) -> None:
    names = TopicNames(settings.topic_prefix)
    wanted = [names.job_events, names.batches, names.changes, names.status, names.workers]
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, num_partitions=settings.partitions, replication_factor=1)
                for name in wanted
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
