"""`bulkjobs dev`: one command starts broker, worker, store and API; Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from bulkjobs.broker import free_port
from tests.support import Client, wait_for


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_runs_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKJOBS_")}
    env.update({"BULKJOBS_DATA_DIR": str(tmp_path), "BULKJOBS_SESSION_TIMEOUT": "2",
                "BULKJOBS_HEARTBEAT_INTERVAL": "0.6"})
    dev = subprocess.Popen([sys.executable, "-m", "bulkjobs", "dev", "--port", str(port)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(dev.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        key = wait_for(lambda: next((m.group(1) for line in lines if (m := re.search(r"API key (\S+)", line))), None),
                       timeout=30, what="the dev API key")
        broker_port = int(next(re.search(r"127\.0\.0\.1:(\d+)", line).group(1) for line in lines if "Tansu" in line))
        api = Client(f"http://127.0.0.1:{port}", key)
        wait_for(lambda: listening(port) and api.get("/v1/health").status == 200, timeout=90, interval=0.3,
                 what="bulkjobs dev to be healthy")
        job = api.run({"type": "resources", "action": "post", "data": [{"type": "note", "attributes": {"a": 1}}]})
        assert job["status"] == "succeeded"

        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert dev.wait(timeout=30) == 0
        assert not listening(port) and not listening(broker_port)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
