"""What the three processes share to expose Prometheus metrics: a registry of their own (with the
process's CPU, memory and garbage collector metrics), serving it on a port of its own, and the
consumer lag of the partitions a process is assigned.

Each process declares its metrics in one module (``api.metrics``, ``streams.metrics``,
``store.metrics``) on a registry made here, so a process shows only its own. Labels never carry
a job id or a tenant: every label takes one of a few known values.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # topic, partition


def new_registry() -> CollectorRegistry:
    """A registry with the process's own metrics (``process_*``, ``python_*``) in it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, host: str, port: int, process: str) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` from a thread; port 0: not served."""
    if not port:
        return
    start_http_server(port, addr=host, registry=registry)
    log.info("%s metrics on http://%s:%d/metrics", process, host, port)


class Consumer(Protocol):
    """What the lag needs of a Kafka consumer (aiokafka's, and Faust's, which wraps it)."""

    def assignment(self) -> Any: ...

    def highwater(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int | None: ...


async def consumer_lag(consumer: Consumer, topics: Collection[str],
                       handled: Mapping[Partition, int] | None = None) -> dict[Partition, int]:
    """Messages behind the end of each assigned partition of ``topics``: the highwater the
    consumer last fetched minus the next offset to handle (``handled``, else the consumer's
    position). A partition the consumer has fetched nothing of yet has no highwater and is left out."""
    lags: dict[Partition, int] = {}
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        done = (handled or {}).get((tp.topic, tp.partition))
        if done is None:
            done = await consumer.position(tp)
        if done is not None:
            lags[(tp.topic, tp.partition)] = max(0, highwater - done)
    return lags


class LagGauge:
    """A gauge of the lag per topic and partition that shows only the partitions assigned now."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(name, documentation, ["topic", "partition"], registry=registry)
        self.shown: set[Partition] = set()

    def show(self, lags: Mapping[Partition, int]) -> None:
        for (topic, partition), lag in lags.items():
            self.gauge.labels(topic, str(partition)).set(lag)
        for topic, partition in self.shown - lags.keys():  # revoked since
            self.gauge.remove(topic, str(partition))
        self.shown = set(lags)
