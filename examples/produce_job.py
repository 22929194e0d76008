"""Submit a bulk job straight to Kafka with plain aiokafka, as any outside producer can.

It sends a ``JobRequest`` and then the records of an NDJSON file (one record per line) as
``RecordPart`` messages under 512 KiB, all keyed by the job id, one at a time so that they
stay in order. The job then shows in the HTTP API like any other (see docs/topics.md).

    python examples/produce_job.py --brokers 127.0.0.1:9092 --tenant acme \\
        --type resources --action external_id_set records.ndjson

Sending the same --job-id again is a harmless retry: the job is not made twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

PART_BYTES = 512 * 1024  # well under the 1 MB message limit of Kafka clients


def parts_of(path: Path, part_bytes: int) -> list[list[object]]:
    """The file's records, cut into lists whose JSON stays under ``part_bytes``."""
    parts: list[list[object]] = [[]]
    size = 0
    with open(path, "rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            if size + len(line) > part_bytes and parts[-1]:
                parts.append([])
                size = 0
            parts[-1].append(json.loads(line))
            size += len(line)
    return parts


async def produce(brokers: str, prefix: str, job_id: str, tenant: str, kind: str, action: str,
                  description: str | None, parts: list[list[object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all")
    await producer.start()
    try:
        topic, key = f"{prefix}-job-events", job_id.encode()
        request = {"kind": "request", "job_id": job_id, "tenant": tenant, "type": kind, "action": action,
                   "description": description, "parts": len(parts)}
        await producer.send_and_wait(topic, json.dumps(request).encode(), key=key)
        for number, records in enumerate(parts):
            part = {"kind": "part", "job_id": job_id, "part": number, "records": records}
            await producer.send_and_wait(topic, json.dumps(part).encode(), key=key)
    finally:
        await producer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="NDJSON records, one per line")
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="bulkjobs", help="BULKJOBS_TOPIC_PREFIX of the deployment")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--type", default="resources", dest="kind")
    parser.add_argument("--action", required=True)
    parser.add_argument("--description")
    parser.add_argument("--job-id", default=None, help="your job id (letters, digits, _ or -); default: random")
    parser.add_argument("--part-bytes", type=int, default=PART_BYTES)
    args = parser.parse_args()
    job_id = args.job_id or uuid.uuid4().hex
    parts = parts_of(args.file, args.part_bytes)
    asyncio.run(produce(args.brokers, args.prefix, job_id, args.tenant, args.kind, args.action,
                        args.description, parts))
    print(job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
