"""A mailbox's message count and size (what a quota is checked against), kept between
calls so an APPEND does not sum every message of the mailbox again.

Summing is a scan of the whole messages table: at 100,000 messages it costs more than the
append it guards. The sums are kept with the folder list they were taken at, (id,
uidvalidity, highestmodseq) of every folder: every change that adds or removes a message
takes a new MODSEQ of its folder (server.store.sqlite.writes) or deletes the folder row,
and folder ids are never reused, so an unchanged list means unchanged sums, whichever
process changed the database. An append of this process moves the kept sums forward
itself (added()), so a session appending in a loop never sums again.
"""

from __future__ import annotations

import sqlite3
import threading

from server.store.usage import totals as scan_totals

FolderKey = tuple[tuple[int, int, int], ...]


def folder_key(c: sqlite3.Connection) -> FolderKey:
    """The folder list the sums are valid for, as transaction `c` sees it."""
    return tuple(c.execute("SELECT id, uidvalidity, highestmodseq FROM folders ORDER BY id"))


class UsageTotals:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: FolderKey | None = None
        self._totals = (0, 0)

    @property
    def kept(self) -> bool:
        return self._key is not None

    def get(self, c: sqlite3.Connection) -> tuple[int, int]:
        """(messages, octets) of the mailbox as transaction `c` sees it."""
        key = folder_key(c)
        with self._lock:
            if key == self._key:
                return self._totals
        totals = scan_totals(c)
        with self._lock:
            self._key, self._totals = key, totals
        return totals

    def added(self, before: FolderKey, folder: int, modseq: int, count: int, size: int) -> None:
        """A committed append of `count` messages, `size` octets into folder id `folder`,
        which took MODSEQ `modseq`, in a transaction that saw the folder list `before`.
        Kept sums taken at `before` move forward; any others are left for get() to drop."""
        after = tuple((i, v, modseq if i == folder else m) for i, v, m in before)
        with self._lock:
            if self._key == before:
                messages, octets = self._totals
                self._key, self._totals = after, (messages + count, octets + size)
