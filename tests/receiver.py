"""A webhook receiver for tests: an aiohttp server in a thread that keeps what it is sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from bulkjobs.broker import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server in a thread that keeps every webhook it is sent, per path, and answers
    each path with the statuses it is told, in turn, the last one from then on (200 if none)."""

    port: int = field(default_factory=free_port)
    received: dict[str, list[Received]] = field(default_factory=dict)
    answers: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.received.get(path, []))

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        with self.lock:
            self.received.setdefault(path, []).append(Received(dict(request.headers), body))
            statuses = self.answers.get(path) or [200]
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return web.Response(status=status)

    def serve(self) -> Callable[[], None]:
        """Start serving; returns how to stop."""
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        runner = web.AppRunner(app)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(10)

        def stop() -> None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

        return stop
