"""The event loop thread's garbage-collection clock (server/runtime/gcclock.py)."""

from __future__ import annotations

import gc
import threading

from server.runtime import gcclock


def _garbage() -> None:
    for _ in range(20_000):
        a: list[object] = []
        a.append(a)  # a cycle: only the collector frees it


def test_collections_in_the_installing_thread_are_counted() -> None:
    gcclock.install()
    before = gcclock.seconds()
    _garbage()
    gc.collect()
    assert gcclock.seconds() > before


def test_collections_in_other_threads_are_not() -> None:
    gcclock.install()
    before = gcclock.seconds()

    def collect() -> None:
        _garbage()
        gc.collect()

    worker = threading.Thread(target=collect)
    worker.start()
    worker.join()
    assert gcclock.seconds() == before


def test_installing_twice_registers_one_callback() -> None:
    gcclock.install()
    gcclock.install()
    assert gc.callbacks.count(gcclock._clock) == 1
