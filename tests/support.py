"""Test support: a running bulkjobs stack (worker, store feeder, API as processes) and an HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from bulkjobs.broker import free_port

T = TypeVar("T")

TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


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
                content_type: str | None = None, key: str | None = None, headers: dict[str, str] | None = None) -> Response:
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
class Stack:
    """One bulkjobs deployment on the shared test broker, with its own topic prefix and data dir."""

    brokers: str
    data_dir: Path
    prefix: str
    env_overrides: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=lambda: {"key-a": "tenant-a", "key-b": "tenant-b"})
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "BULKJOBS_KAFKA_BROKERS": self.brokers,
            "BULKJOBS_DATA_DIR": str(self.data_dir),
            "BULKJOBS_API_KEYS": ",".join(f"{k}={t}" for k, t in self.keys.items()),
            "BULKJOBS_PORT": str(self.port),
            "BULKJOBS_TOPIC_PREFIX": self.prefix,
            "BULKJOBS_SESSION_TIMEOUT": "2",
            "BULKJOBS_HEARTBEAT_INTERVAL": "0.6",
        })
        env.update(self.env_overrides)
        return env

    def client(self, key: str | None = "key-a") -> Client:
        return Client(f"http://127.0.0.1:{self.port}", key)

    def start(self, part: str, name: str | None = None) -> subprocess.Popen[bytes]:
        name = name or part
        log = open(self.data_dir / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "bulkjobs", part], env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_all(self) -> "Stack":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for part in ("worker", "store", "api"):
            self.start(part)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        client = self.client(None)

        def healthy() -> bool:
            for part, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{part} exited with {process.returncode}; see {self.data_dir}/{part}.log")
            try:
                return client.get("/v1/health").status == 200
            except OSError:
                return False

        wait_for(healthy, timeout=timeout, interval=0.2, what="the stack to be healthy")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
