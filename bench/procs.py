"""CPU and memory of a server's process tree, read with psutil.

A server is one or more root processes and everything they started: Dovecot's master with
its login, imap, pop3, auth and log processes; our front-end and back-end service processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import psutil


def tree(roots: Iterable[int]) -> list[psutil.Process]:
    """The root processes and all their descendants that are alive now."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            continue
    return list(found.values())


def cpu_seconds(roots: Iterable[int]) -> float:
    """User+system CPU of the live tree, plus what the roots' reaped children used (their
    time moves into the parent's children_* counters when they exit, so a login process
    that served one client and died is still counted)."""
    roots = list(roots)
    total = 0.0
    for proc in tree(roots):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            if proc.pid in roots:
                total += times.children_user + times.children_system
    return total


@dataclass(frozen=True)
class Memory:
    processes: int
    pss: int  # bytes; proportional set size: shared pages split among their users
    rss: int  # bytes; counts shared pages once per process (over-counts a forking server)
    uss: int


def memory(roots: Iterable[int]) -> Memory:
    """PSS/RSS/USS summed over the tree (PSS falls back to RSS where smaps is unreadable)."""
    count = pss = rss = uss = 0
    for proc in tree(roots):
        try:
            info = proc.memory_full_info()
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                basic = proc.memory_info()
                count, rss, pss, uss = count + 1, rss + basic.rss, pss + basic.rss, uss + basic.rss
            continue
        except psutil.Error:
            continue
        count += 1
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        uss += info.uss
    return Memory(count, pss, rss, uss)
