"""`bulkjobs dev`: one command starts broker, worker, store and API, restarts a part that dies,
and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from bulkjobs.broker import free_port
from tests.receiver import Receiver
from tests.support import Client, wait_for


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children(parent: int) -> dict[str, int]:
    """The bulkjobs parts (``python -m bulkjobs PART``) whose parent is ``parent``: part -> pid."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and b"bulkjobs" in args and len(args) > 3:
            found[args[args.index(b"bulkjobs") + 1].decode()] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Dev:
    process: subprocess.Popen[str]
    api: Client
    broker_port: int
    lines: list[str] = field(default_factory=list)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """A running ``bulkjobs dev`` in its own process group, healthy, with its output collected."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKJOBS_")}
    env.update({"BULKJOBS_DATA_DIR": str(tmp_path), "BULKJOBS_SESSION_TIMEOUT": "2",
                "BULKJOBS_HEARTBEAT_INTERVAL": "0.6"})
    process = subprocess.Popen([sys.executable, "-m", "bulkjobs", "dev", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    try:
        key = wait_for(lambda: next((m.group(1) for line in lines if (m := re.search(r"API key (\S+)", line))), None),
                       timeout=30, what="the dev API key")
        broker_port = int(next(re.search(r"127\.0\.0\.1:(\d+)", line).group(1) for line in lines if "Tansu" in line))
        api = Client(f"http://127.0.0.1:{port}", key)
        wait_for(lambda: listening(port) and api.get("/v1/health").status == 200, timeout=90, interval=0.3,
                 what="bulkjobs dev to be healthy")
        yield Dev(process, api, broker_port, lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_dev_runs_everything_and_ctrl_c_stops_it(dev: Dev) -> None:
    job = dev.api.run({"type": "resources", "action": "post", "data": [{"type": "note", "attributes": {"a": 1}}]})
    assert job["status"] == "succeeded"
    parts = children(dev.process.pid)
    assert set(parts) == {"worker", "store", "api"}
    metrics = re.findall(r"(http://\S+/metrics) \((\w+)\)", next(line for line in dev.lines if "metrics on" in line))
    assert {part for _, part in metrics} == {"api", "worker", "store"}
    for url, part in metrics:
        with urllib.request.urlopen(url, timeout=10) as resp:  # no API key
            assert f"bulkjobs_{part}_".encode() in resp.read()

    os.killpg(dev.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert dev.process.wait(timeout=30) == 0
    assert not listening(int(dev.api.base.rsplit(":", 1)[1])) and not listening(dev.broker_port)
    assert not any(alive(pid) for pid in parts.values())
    assert not any("restart" in line for line in dev.lines)


def test_dev_restarts_a_killed_worker_and_the_next_job_succeeds(dev: Dev) -> None:
    killed = children(dev.process.pid)["worker"]
    os.kill(killed, signal.SIGKILL)

    wait_for(lambda: any(f"worker (pid {killed}) was killed by SIGKILL; restarting it in 1 s" in line
                         for line in dev.lines), timeout=10, what="the log line of the dead worker")
    restarted = wait_for(lambda: children(dev.process.pid).get("worker"), timeout=10, what="a new worker")
    assert restarted != killed
    assert any(f"worker restarted (pid {restarted})" in line for line in dev.lines)

    job = dev.api.run({"type": "resources", "action": "post", "data": [{"type": "note", "attributes": {"a": 2}}]})
    assert job["status"] == "succeeded"
    assert dev.api.get("/v1/health").status == 200
    assert dev.process.poll() is None and alive(restarted)

    dev.process.send_signal(signal.SIGTERM)  # SIGTERM to the supervisor alone stops its parts too
    assert dev.process.wait(timeout=30) == 0
    assert not alive(restarted)


def test_dev_prints_a_webhook_secret_that_signs_the_dev_tenants_webhooks(dev: Dev) -> None:
    secret = next(m.group(1) for line in dev.lines if (m := re.search(r"webhook secret (whsec_\S+)", line)))
    receiver = Receiver()
    stop = receiver.serve()
    try:
        job = dev.api.submit({"type": "resources", "action": "post", "callback_url": receiver.url("dev"),
                              "data": [{"type": "note", "attributes": {"a": 1}}]})
        wait_for(lambda: receiver.got("dev"), timeout=60, what="the dev job's webhook")
        [received] = receiver.got("dev")
        payload = Webhook(secret).verify(received.body, received.headers)
        assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]
    finally:
        stop()
