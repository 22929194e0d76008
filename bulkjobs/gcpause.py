"""Pausing the cyclic garbage collector around one unit of synchronous work.

Parsing a body chunk or applying a batch makes many fresh objects at once, and the cyclic
collector would rescan them many times over. Pausing it per unit of work (never across an
await) keeps one request's resume from turning it back on in the middle of another's unit:
the units of every thread share one count, and the collector runs again only when the last
of them ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_paused = 0  # units of work under way that asked for the pause


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the collector for the ``with`` body (no await inside it); nested and concurrent
    pauses share one count."""
    global _paused
    with _lock:
        _paused += 1
        if _paused == 1:
            gc.disable()
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if _paused == 0:
                gc.enable()


def without_gc(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` with the collector paused: hand it to ``asyncio.to_thread`` as is."""
    with gc_paused():
        return work(*args)
