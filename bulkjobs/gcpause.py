"""Pausing the cyclic garbage collector around one unit of synchronous work.

Parsing a body chunk or applying a batch makes many fresh objects at once, and the cyclic
collector would rescan them many times over. Pausing it per unit of work (never across an
await) keeps one request's resume from turning it back on in the middle of another's unit:
the units of every thread share one count, and the collector runs again only when the last
of them ends.

A bulk intake (parsing and routing a large body in many units, ``survivors_frozen``) also keeps
objects alive between its units, its pending batches; each collection after a unit would
rescan them all. Inside such a span the objects that survive a unit are frozen (``gc.freeze``)
as it ends, so no collection scans them; whenever a span ends, every frozen object is thawed
and cyclic garbage made meanwhile is collected as usual (a span under way freezes its own
survivors again after its next unit), so that overlapping intakes never keep it frozen for long.
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
_freezing = 0  # spans of bulk work under way whose survivors are frozen


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
                if _freezing:
                    gc.freeze()  # O(1): the survivors join the frozen generation, unscanned
                gc.enable()


@contextmanager
def survivors_frozen() -> Iterator[None]:
    """For the ``with`` body (which may await): objects that survive each unit of work paused
    with ``gc_paused`` are frozen rather than rescanned by the collection after every unit;
    when the span ends, every frozen object is thawed (``gc.unfreeze``)."""
    global _freezing
    with _lock:
        _freezing += 1
    try:
        yield
    finally:
        with _lock:
            _freezing -= 1
            gc.unfreeze()  # O(1): back to the oldest generation, collected as usual


def without_gc(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` with the collector paused: hand it to ``asyncio.to_thread`` as is."""
    with gc_paused():
        return work(*args)
