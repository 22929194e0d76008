"""Test support: a bulkjobs stack for tests (``bulkjobs.devstack`` with two tenants) and an HTTP client."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from bulkjobs import devstack
from bulkjobs.domain.jobs import TERMINAL
from bulkjobs.kafka import clients
from bulkjobs.kafka.topics import TopicNames

T = TypeVar("T")



def wait_for(condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Client:
    base: str
    key: str | None = None

    def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                content_type: str | None = None, key: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
        sent_headers = dict(headers or {})
        api_key = key if key is not None else self.key
        if api_key:
            sent_headers.setdefault("x-api-key", api_key)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = content_type or "application/json"
        if content_type:
            sent_headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=sent_headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                raw, status, got = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, dict(exc.headers)
        body = json.loads(raw) if raw and got.get("Content-Type", "").startswith("application/json") else raw
        return Response(status, body, got)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def post_csv(self, data: bytes, **settings: Any) -> Response:
        """POST a CSV body with the job's settings in the query string (field_mappings as JSON)."""
        query = {k: json.dumps(v) if k == "field_mappings" else v for k, v in settings.items()}
        return self.post("/v1/jobs?" + urllib.parse.urlencode(query), data=data, content_type="text/csv")

    def post_multipart(self, parts: list[tuple[str, str | None, bytes]]) -> Response:
        """POST ``multipart/form-data`` of (name, filename | None, content) parts."""
        boundary = "bulkjobs-test-" + os.urandom(8).hex()
        body = b""
        for name, filename, content in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return self.post("/v1/jobs", data=body, content_type=f"multipart/form-data; boundary={boundary}")

    def submit(self, job: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        resp = self.post("/v1/jobs", json_body=job, **kwargs)
        assert resp.status == 202, resp.body
        return resp.body

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.get(f"/v1/jobs/{job_id}")
        assert resp.status == 200, resp.body
        return resp.body

    def wait_done(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(lambda: (job := self.job(job_id))["status"] in TERMINAL and job,
                        timeout=timeout, what=f"job {job_id} to finish")

    def run(self, job: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_done(self.submit(job)["id"], timeout)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            resp = self.get(f"/v1/jobs/{job_id}/results?offset={len(items)}&limit=1000")
            assert resp.status == 200, resp.body
            if not resp.body["items"]:
                return items
            items.extend(resp.body["items"])


@dataclass
class Stack(devstack.Stack):
    """One bulkjobs deployment on the shared test broker, with its own topic prefix and data dir,
    two tenants (``key-a``, ``key-b``) and a client for each."""

    keys: dict[str, str] = field(default_factory=lambda: {"key-a": "tenant-a", "key-b": "tenant-b"})

    def client(self, key: str | None = "key-a") -> Client:
        return Client(self.base, key)


def produce(brokers: str, topic: str, messages: list[tuple[bytes | None, bytes]], pause: float = 0.0) -> None:
    """Write (key, value) messages to a topic, as an outside producer would, and wait for the
    acks; ``pause`` seconds between two messages make a slow producer."""
    async def send() -> None:
        producer = clients.producer(brokers)
        await producer.start()
        try:
            for n, (key, value) in enumerate(messages):
                if n and pause:
                    await asyncio.sleep(pause)
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def statuses_of(stack: Stack, job_id: str) -> list[dict[str, Any] | None]:
    """Every status the tracker published for the job, in order (None: a tombstone)."""
    async def read() -> list[dict[str, Any] | None]:
        topic = TopicNames(stack.prefix).status
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.brokers, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            found: list[dict[str, Any] | None] = []

            async def behind() -> bool:
                for tp in partitions:
                    if await consumer.position(tp) < ends[tp]:
                        return True
                return False

            while await behind():
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    found += [None if m.value is None else json.loads(m.value)
                              for m in messages if m.key == job_id.encode()]
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())
