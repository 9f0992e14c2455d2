"""Time the event loop's thread spends in Python's cyclic garbage collector.

A collection of the oldest generation walks every tracked object of the process, and a
back end whose caches hold many of them pays tens of milliseconds for it, in whichever
command happened to allocate at that moment. The IMAP back end judges a read-only command
slow by its own time (server/backend/imap/server.py, INLINE_SLOW); a collection inside it
says nothing about the command and would move every command to the worker threads, where
the collection happens all the same.
"""

from __future__ import annotations

import gc
import threading
import time

_thread: int | None = None
_started = 0.0
_total = 0.0


def _clock(phase: str, info: dict[str, int]) -> None:
    global _started, _total
    if threading.get_ident() != _thread:
        return
    if phase == "start":
        _started = time.perf_counter()
    else:
        _total += time.perf_counter() - _started


def install() -> None:
    """Count the collections that run in the calling thread (the event loop's)."""
    global _thread
    _thread = threading.get_ident()
    if _clock not in gc.callbacks:
        gc.callbacks.append(_clock)


def seconds() -> float:
    """Seconds spent collecting in that thread so far."""
    return _total
