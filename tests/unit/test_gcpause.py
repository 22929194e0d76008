"""Pausing the garbage collector per unit of work, shared by concurrent and nested units."""

from __future__ import annotations

import gc
import threading

from bulkjobs.gcpause import gc_paused, without_gc


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
