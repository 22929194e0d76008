"""Kafka clients as bulkjobs needs them on Tansu: every workaround is set here, once.

- One record per producer batch. After a producer batch of several records, Tansu reports a
  partition's end offset (ListOffsets) as the start of that batch + 1, not the true end, which
  would cut the catch-up barriers short (docs/architecture.md, deviations). Messages already
  carry a batch of records each, so little is lost.
- One request size for every producer, so that what one process sends another can forward.
- zstd compression on every producer. A message carries a batch of up to 1,000 records as
  JSON, which compresses about 6x at about 0.4 us of CPU per record: the broker stores, copies
  and serves a sixth of the bytes, and the processes write and read a sixth through their
  sockets (on loopback a socket write costs the sender the receiver's network work too).
- A short fetch wait for consumers of several partitions: with one broker node, a long empty
  poll of an idle partition stalls the next fetch of the busy ones. Tansu answers a fetch that
  found nothing only when its wait is over (data written meanwhile does not wake it), and each
  fetch costs it about 1.2 ms of CPU whatever it returns: an idle consumer's loop at this wait
  costs the broker 2.5% of a core (1.8% with one partition; 0.9% at 200 ms, 0.4% at 500 ms).
  Idle, a worker costs the broker 2.9% of a core, the store 2.8% and the API 1.6%.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bulkjobs.kafka.topics import MAX_REQUEST_BYTES

FETCH_MAX_WAIT_MS = 50
COMPRESSION = "zstd"

# The same producer settings for the Faust worker, in Faust's names.
FAUST_PRODUCER: dict[str, Any] = {
    "producer_acks": -1,
    "producer_compression_type": COMPRESSION,
    "producer_max_batch_size": 1,
    "producer_max_request_size": MAX_REQUEST_BYTES,
}


def producer(brokers: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer that waits for every replica (acks=all) and sends one compressed record per batch."""
    options: dict[str, Any] = {"acks": "all", "compression_type": COMPRESSION, "max_batch_size": 1,
                               "max_request_size": MAX_REQUEST_BYTES}
    return AIOKafkaProducer(bootstrap_servers=brokers, **{**options, **overrides})


def consumer(brokers: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told to and does not idle long on empty partitions."""
    options: dict[str, Any] = {"enable_auto_commit": False, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS}
    return AIOKafkaConsumer(*topics, bootstrap_servers=brokers, **{**options, **overrides})
