"""Fewer glibc malloc arenas per service process, and a fixed mmap threshold.

glibc gives a thread that finds the main arena busy an arena of its own (up to 8 per core)
and an arena keeps the memory freed into it. A service's worker threads (the front end's
argon2 checks, 19 MiB each; the back end's store work) each left one behind: an IMAP front
end held about 150 MB of PSS at rest (bench/README.md, "IDLE at scale": 152 -> 57-79 MB at
rest, 1,000 IDLE sessions through front and back end 289 -> 203-226 MB held). Two arenas keep the loop thread and the
worker threads from queueing on one lock, which is what the extra arenas are for.

glibc also raises its mmap threshold each time a large block is freed, after which blocks of
up to 32 MiB come from the heap, where any small block that outlives them keeps the heap
from shrinking. A front end that had logged 10,000 IDLE clients in and handed them all to
the back end held 61 MB more than at rest (6.3 KB per handed-off session, which it keeps
next to nothing of); with the threshold fixed, 4.6 MB (bench/README.md, "IDLE at scale").

MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ in the environment win (glibc reads them at
start); other C libraries have no mallopt and are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

M_ARENA_MAX = -8  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
ARENAS = 2
#: glibc's own starting value; setting it explicitly turns the dynamic raise off.
MMAP_THRESHOLD = 128 * 1024

log = logging.getLogger("mailctl")


def _mallopt(option: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(option, value))


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True when done. Call before threads start."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return _mallopt(M_ARENA_MAX, arenas)


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Keep glibc's mmap threshold at `size` (no dynamic raise); True when done."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    return _mallopt(M_MMAP_THRESHOLD, size)
