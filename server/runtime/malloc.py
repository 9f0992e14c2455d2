"""Fewer glibc malloc arenas per service process.

glibc gives a thread that finds the main arena busy an arena of its own (up to 8 per core)
and an arena keeps the memory freed into it. A service's worker threads (the front end's
argon2 checks, 19 MiB each; the back end's store work) each left one behind: an IMAP front
end held about 150 MB of PSS at rest (bench/README.md, "IDLE at scale": 152 -> 57-79 MB at
rest, 1,000 IDLE sessions through front and back end 289 -> 203-226 MB held). Two arenas keep the loop thread and the
worker threads from queueing on one lock, which is what the extra arenas are for.

MALLOC_ARENA_MAX in the environment wins (glibc reads it at start); other C libraries have
no mallopt and are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2

log = logging.getLogger("mailctl")


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True when done. Call before threads start."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
