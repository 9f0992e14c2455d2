"""SQLite connections: a pool per mailbox, a bound on how many mailboxes keep theirs
open, and the two ways of selecting many UIDs without one query per message."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

OPEN_MAILBOXES = 64  # mailboxes that keep idle SQLite connections open
TOUCH_EVERY = 1.0  # seconds between two "used" marks of one mailbox in RecentPools
IN_CHUNK = 500  # UIDs per "IN (...)" query; above a few of these a folder scan is cheaper


class Pool:
    """Open SQLite connections of one mailbox, reused across threads (one user at a time),
    and a descriptor of its body folder kept open with them (sync_folder)."""

    def __init__(
        self, path: Path, touch: Callable[[], None] = lambda: None, folder: Path | None = None
    ) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._touch = touch
        self._touched_at = -TOUCH_EVERY
        self._folder = folder
        self._folder_fd: int | None = None
        self._folder_users = 0  # threads in sync_folder: the descriptor stays open for them
        self._folder_closing = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=30.0,
            cached_statements=64,
        )
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so a returned write survives power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-2000")
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        # The most-recently-used order only decides which idle connections are closed
        # first: once a second per mailbox is recent enough, and spares a locked
        # OrderedDict update per transaction.
        now = time.monotonic()
        if now - self._touched_at >= TOUCH_EVERY:
            self._touched_at = now
            self._touch()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._open()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(self._idle) < 4:
                self._idle.append(conn)
            else:
                with self._lock:
                    self._all.remove(conn)
                conn.close()

    @property
    def open(self) -> bool:
        return bool(self._all)

    def sync_folder(self) -> None:
        """fsync the body folder (a new file's name made durable) through a descriptor
        kept while the connections are: one system call per append, not three."""
        assert self._folder is not None
        with self._lock:
            fd = self._folder_fd
            if fd is None:
                fd = os.open(self._folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self._folder_fd, self._folder_closing = fd, False
            self._folder_users += 1
        try:
            os.fsync(fd)
        finally:
            with self._lock:
                self._folder_users -= 1
                if self._folder_closing:
                    self._close_folder()

    def _close_folder(self) -> None:
        """Close the folder's descriptor now, or when its last user is done (lock held):
        closed under a user, its number could name another file by the time it fsyncs."""
        self._folder_closing = True
        if self._folder_users == 0 and self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None

    def trim(self) -> None:
        """Close the idle connections (in-use ones finish; new ones open on demand)."""
        self._touched_at = -TOUCH_EVERY  # the next use marks it used again at once
        with self._lock:
            self._close_folder()
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._close_folder()
            conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


class RecentPools:
    """The mailboxes of one store by last use: each costs file descriptors and cache while
    its connections stay open, so only the OPEN_MAILBOXES most recently used keep theirs."""

    def __init__(self, pool_of: Callable[[str], Pool | None]) -> None:
        self._pool_of = pool_of
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def touched(self, key: str) -> None:
        """Mailbox `key` was used: keep its connections; close those of the least recently
        used mailboxes beyond OPEN_MAILBOXES."""
        recent = self._recent
        with self._lock:
            recent[key] = None
            recent.move_to_end(key)
            stale = []
            while len(recent) > OPEN_MAILBOXES:
                old, _ = recent.popitem(last=False)
                pool = self._pool_of(old)
                if pool is not None:
                    stale.append(pool)
        for pool in stale:
            pool.trim()


def select_rows(
    c: sqlite3.Connection, folder_id: int, uids: Sequence[int], cols: str
) -> list[tuple]:
    """`cols` (the first one uid) of the messages among `uids` in a folder, by ascending
    UID: IN lists of IN_CHUNK UIDs, or one folder scan when there would be many of those."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    if len(wanted) > 4 * IN_CHUNK:
        keep = set(wanted)
        return [
            r
            for r in c.execute(
                f"SELECT {cols} FROM messages WHERE folder=? ORDER BY uid", (folder_id,)
            )
            if r[0] in keep
        ]
    rows: list[tuple] = []
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows.extend(
            c.execute(
                f"SELECT {cols} FROM messages WHERE folder=? AND uid IN ({marks}) ORDER BY uid",
                (folder_id, *chunk),
            )
        )
    return rows


def range_query(c: sqlite3.Connection, sql: str, name: str, wanted: list[int]) -> list[tuple]:
    """`sql` (ending in a WHERE clause over messages m, its one parameter `name`) for the
    sorted UIDs `wanted`: one BETWEEN when they are dense (a FETCH 1:* is), filtered here,
    else IN lists."""
    lo, hi = wanted[0], wanted[-1]
    if hi - lo < 2 * len(wanted) + 64:
        rows = c.execute(
            sql + " AND m.uid BETWEEN ? AND ? ORDER BY m.uid", (name, lo, hi)
        ).fetchall()
        if hi - lo + 1 != len(wanted):
            keep = set(wanted)
            rows = [r for r in rows if r[0] in keep]
        return rows
    rows = []
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows.extend(c.execute(f"{sql} AND m.uid IN ({marks}) ORDER BY m.uid", (name, *chunk)))
    return rows
