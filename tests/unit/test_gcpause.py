"""Pausing the garbage collector per unit of work, shared by concurrent and nested units."""

from __future__ import annotations

import gc
import threading
import weakref

from bulkjobs.gcpause import gc_paused, survivors_frozen, without_gc


def test_the_collector_runs_again_only_when_the_last_unit_ends() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer unit is still under way
    assert gc.isenabled()


def test_a_unit_that_raises_still_resumes_the_collector() -> None:
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_one_thread_ending_its_unit_does_not_resume_the_collector_under_another() -> None:
    inside, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def long_unit() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=long_unit)
    thread.start()
    inside.wait(5)
    assert without_gc(lambda: 1 + 1) == 2  # a short unit begins and ends meanwhile
    release.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


class _Survivor:
    """A container the collector tracks (and would scan at every collection)."""


def test_outside_a_span_a_unit_freezes_nothing() -> None:
    with gc_paused():
        kept = _Survivor()
    assert gc.get_freeze_count() == 0
    assert gc.is_tracked(kept)


def test_in_a_span_what_survives_a_unit_is_frozen_until_a_span_ends() -> None:
    with survivors_frozen():
        with survivors_frozen():  # another intake under way at the same time
            with gc_paused():
                kept = _Survivor()
            assert gc.get_freeze_count() > 0
            assert id(kept) not in set(map(id, gc.get_objects()))  # frozen: in no generation, never scanned
        assert gc.get_freeze_count() == 0  # thawed as the inner span ended: garbage never stays frozen long
        assert id(kept) in set(map(id, gc.get_objects()))
        with gc_paused():
            pass
        assert id(kept) not in set(map(id, gc.get_objects()))  # the outer span's next unit froze it again
    assert gc.get_freeze_count() == 0
    assert id(kept) in set(map(id, gc.get_objects()))  # thawed: collected as usual again


def test_cyclic_garbage_made_during_a_span_is_collected_after_it() -> None:
    with survivors_frozen():
        with gc_paused():
            cycle = _Survivor()
            cycle.me = cycle  # type: ignore[attr-defined]
            ref = weakref.ref(cycle)
            del cycle
        gc.collect()
        assert ref() is not None  # frozen: no collection reaches it during the span
    gc.collect()
    assert ref() is None
