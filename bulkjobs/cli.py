"""The ``bulkjobs`` command: ``dev`` runs everything locally; ``api``, ``worker``, ``store`` run one part."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import replace

from bulkjobs.settings import Settings


def _children(settings: Settings, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "bulkjobs", part], env=env)
        for part in ("worker", "store", "api")
    ]


def run_dev(settings: Settings) -> int:
    """Broker (unless one is configured), worker, store feeder and API, until Ctrl-C."""
    from bulkjobs.broker import start_broker

    env = dict(os.environ)
    broker = None
    if not os.environ.get("BULKJOBS_KAFKA_BROKERS"):
        broker = start_broker()
        env["BULKJOBS_KAFKA_BROKERS"] = broker.address
        print(f"bulkjobs dev: embedded Tansu broker on {broker.address}", flush=True)
    if not settings.api_keys:
        key = "dev-" + secrets.token_urlsafe(16)
        env["BULKJOBS_API_KEYS"] = f"{key}=dev"
        print(f"bulkjobs dev: API key {key} (tenant 'dev'); set BULKJOBS_API_KEYS to choose your own", flush=True)
    env["BULKJOBS_PORT"] = str(settings.port)
    env["BULKJOBS_DATA_DIR"] = str(settings.data_dir)
    print(f"bulkjobs dev: API on http://{settings.host}:{settings.port}/v1  (Ctrl-C stops everything)", flush=True)
    children = _children(settings, env)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if broker is not None:
            broker.stop()
    failed = [child.args for child in children if child.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed and not stopping else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulkjobs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run broker, worker, store and API locally")
    dev.add_argument("--port", type=int, help="API port (default 8080 or BULKJOBS_PORT)")
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--port", type=int)
    sub.add_parser("worker", help="run the Faust worker")
    sub.add_parser("store", help="run the process that feeds the SQLite view")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    if getattr(args, "port", None):
        settings = replace(settings, port=args.port)
    if args.command == "dev":
        return run_dev(settings)
    if args.command == "api":
        from bulkjobs.api.app import run_api

        run_api(settings)
    elif args.command == "worker":
        from bulkjobs.streams.worker import run_worker

        sys.argv = [sys.argv[0]]  # Faust's worker reads the command line too
        run_worker(settings)
    elif args.command == "store":
        from bulkjobs.store.feeder import run_feeder

        run_feeder(settings)
    return 0
