"""Reading single messages back from a topic by partition and offset (no consumer group).

The job tracker uses it to release a job's parked batches: on resume it sends them again, and
each run of a scheduled definition gets copies of the definition's batches.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs.kafka import clients


class Refetcher:
    def __init__(self, brokers: str, topic: str) -> None:
        self.brokers, self.topic = brokers, topic
        self._consumer: AIOKafkaConsumer | None = None  # made on first use, inside the event loop
        self._lock = asyncio.Lock()  # one seek-and-read at a time on the one consumer

    async def fetch(self, partition: int, offset: int) -> bytes:
        async with self._lock:
            if self._consumer is None:
                self._consumer = clients.consumer(self.brokers)
                await self._consumer.start()
            tp = TopicPartition(self.topic, partition)
            self._consumer.assign([tp])
            self._consumer.seek(tp, offset)
            while True:
                message = await self._consumer.getone(tp)
                if message.offset == offset:
                    return message.value or b""
