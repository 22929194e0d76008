"""Jobs produced straight to Kafka: the example producer, retries, and the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs.kafka.topics import TopicNames
from tests.support import Client, Stack, produce, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "produce_job.py"


def produce_with_example(stack: Stack, path: Path, job_id: str, action: str, part_bytes: int = 4096) -> None:
    subprocess.run([sys.executable, str(EXAMPLE), str(path), "--brokers", stack.brokers, "--prefix", stack.prefix,
                    "--tenant", "tenant-a", "--action", action, "--job-id", job_id, "--description", "from kafka",
                    "--part-bytes", str(part_bytes)], check=True, timeout=60, capture_output=True)


def wait_produced(api: Client, job_id: str) -> dict:
    """A produced job reaches the view some time after its messages: wait for it, then for its end."""
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").status == 200, what=f"job {job_id} to appear")
    return api.wait_done(job_id)


def send_raw(stack: Stack, messages: list[tuple[bytes | None, bytes]]) -> None:
    produce(stack.brokers, TopicNames(stack.prefix).job_events, messages)


def dead_letters(stack: Stack) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    async def read() -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
        topic = TopicNames(stack.prefix).dead_letters
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.brokers, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not partitions:
                return []
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            found: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
            while len(found) < sum(ends.values()):
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    found += [(m.key, m.value, dict(m.headers)) for m in messages]
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_a_job_produced_to_kafka_shows_in_the_api_and_a_retry_changes_nothing(stack: Stack, api: Client,
                                                                              tmp_path: Path) -> None:
    kind = f"produced-{uuid.uuid4().hex[:8]}"
    records = [{"type": kind, "external_id": f"p-{i}", "attributes": {"i": i}} for i in range(300)]
    records[7] = {"type": kind}  # no external id: a fresh id from the router
    records[9] = {"type": kind, "external_id": 5}  # a bad record fails alone
    path = tmp_path / "records.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    job_id = f"kafka-{uuid.uuid4().hex[:12]}"

    produce_with_example(stack, path, job_id, "post")
    job = wait_produced(api, job_id)

    assert job["status"] == "partially_succeeded" and job["description"] == "from kafka"
    assert job["counts"] == {"total": 300, "processed": 300, "created": 299, "updated": 0, "deleted": 0,
                             "skipped": 0, "failed": 1}
    results = api.results(job_id)
    assert [r["index"] for r in results] == list(range(300))
    assert not results[9]["success"] and results[9]["errors"][0]["code"] == "InvalidRecord"
    assert api.get(f"/v1/objects/{results[7]['id']}").body["type"] == kind
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 299

    produce_with_example(stack, path, job_id, "post")  # a producer retry
    later = f"kafka-{uuid.uuid4().hex[:12]}"
    produce_with_example(stack, path, later, "external_id_set")  # records 7 and 9 fail there
    assert wait_produced(api, later)["counts"]["updated"] == 298  # everything before it was handled
    assert api.job(job_id)["counts"] == job["counts"]
    assert api.get(f"/v1/objects?type={kind}&limit=1").body["total"] == 299
    assert [j["id"] for j in api.get("/v1/jobs?q=from%20kafka&limit=1000").body["items"]].count(job_id) == 1


def test_malformed_messages_go_to_the_dead_letter_topic_and_the_worker_goes_on(stack: Stack, api: Client,
                                                                             tmp_path: Path) -> None:
    bad_request = f"bad-{uuid.uuid4().hex[:8]}"
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    send_raw(stack, [
        (b"garbage-key", b"this is not json"),
        (bad_request.encode(), json.dumps({"kind": "request", "job_id": bad_request, "tenant": "tenant-a",
                                           "type": "resources", "action": "explode", "parts": 1}).encode()),
        (orphan.encode(), json.dumps({"kind": "part", "job_id": orphan, "part": 0, "records": []}).encode()),
        (b"other-key", json.dumps({"kind": "mystery", "job_id": "x"}).encode()),
    ])

    failed = wait_produced(api, bad_request)
    assert failed["status"] == "failed" and "explode" in failed["error"]["message"]
    letters = wait_for(lambda: (found := dead_letters(stack)) and len(found) >= 4 and found,
                       what="four dead letters")
    reasons = {key: headers["reason"].decode() for key, _, headers in letters}
    assert "not JSON" in reasons[b"garbage-key"]
    assert "explode" in reasons[bad_request.encode()]
    assert "did not request it" in reasons[orphan.encode()]
    assert "mystery" in reasons[b"other-key"]
    assert all(headers["topic"] == TopicNames(stack.prefix).job_events.encode() for _, _, headers in letters)
    assert (b"garbage-key", b"this is not json") in [(key, value) for key, value, _ in letters]

    kind = f"after-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "after.ndjson"
    path.write_text(json.dumps({"type": kind, "external_id": "a"}) + "\n")
    job_id = f"after-{uuid.uuid4().hex[:8]}"
    produce_with_example(stack, path, job_id, "post")
    assert wait_produced(api, job_id)["status"] == "succeeded"


def test_a_part_the_job_did_not_request_fails_the_job_and_goes_to_the_dead_letters(stack: Stack, api: Client) -> None:
    job_id = f"extra-{uuid.uuid4().hex[:8]}"
    record = {"type": "extra", "external_id": "e-1"}
    send_raw(stack, [
        (job_id.encode(), json.dumps({"kind": "request", "job_id": job_id, "tenant": "tenant-a", "type": "resources",
                                      "action": "external_id_set", "parts": 1}).encode()),
        (job_id.encode(), json.dumps({"kind": "part", "job_id": job_id, "part": 3, "records": [record]}).encode()),
    ])

    job = wait_produced(api, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "job_failed"
    assert job["error"]["message"] == "a message of the job was refused: part 3 of a job that did not request it"
    letters = wait_for(lambda: [h for key, _, h in dead_letters(stack) if key == job_id.encode()],
                       what="the part's dead letter")
    assert letters[0]["reason"] == b"part 3 of a job that did not request it"
