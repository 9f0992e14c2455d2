"""A mailbox's message count and size (what a quota is checked against), kept between
calls so an APPEND does not sum every message of the mailbox again.

Summing is a scan of the whole messages table: at 100,000 messages it costs more than the
append it guards. The sums are kept with the state of the folder list they were taken at:
every change that adds or removes a message takes a new MODSEQ of its folder
(server.store.sqlite.writes) or deletes the folder row, so unchanged folders mean
unchanged sums, whichever process changed the database. That state is read as one row of
sums, (count, sum of ids, sum of UIDVALIDITYs, sum of HIGHESTMODSEQs): a new folder takes an
id above every id ever given (never reused), so any change to the set of folders changes
the count or the sum of ids (k folders gone and k new ones: the new ids are larger), and
over an unchanged set a change raises one HIGHESTMODSEQ, never lowers one. One row, where
a row per folder would be a step of SQLite (and a hand-off of the GIL) per folder, at
every append. An append of this process moves the kept sums forward itself (added()), so
a session appending in a loop never sums again.
"""

from __future__ import annotations

import sqlite3
import threading

from server.store.usage import totals as scan_totals

FolderKey = tuple[int, int, int, int]


#: The folder key as a one-row table `k` (columns n, i, v, m), for a query that reads it
#: with a folder's row: one statement where two would be two more SQLite steps.
KEY_TABLE = (
    "(SELECT count(*) AS n, coalesce(sum(id), 0) AS i, coalesce(sum(uidvalidity), 0) AS v,"
    " coalesce(sum(highestmodseq), 0) AS m FROM folders) AS k"
)


def folder_key(c: sqlite3.Connection) -> FolderKey:
    """The state of the folder list the sums are valid for, as transaction `c` sees it."""
    row = c.execute(f"SELECT n, i, v, m FROM {KEY_TABLE}").fetchone()
    return (row[0], row[1], row[2], row[3])


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
        return self.at(c, folder_key(c))

    def at(self, c: sqlite3.Connection, key: FolderKey) -> tuple[int, int]:
        """get() for the folder list `key` that transaction `c` has just read."""
        with self._lock:
            if key == self._key:
                return self._totals
        totals = scan_totals(c)
        with self._lock:
            self._key, self._totals = key, totals
        return totals

    def added(self, before: FolderKey, was: int, modseq: int, count: int, size: int) -> None:
        """A committed append of `count` messages, `size` octets into a folder whose
        HIGHESTMODSEQ went from `was` to `modseq`, in a transaction that saw the folder
        list `before`. Kept sums taken at `before` move forward; any others are left for
        get() to drop."""
        n, ids, validities, modseqs = before
        after = (n, ids, validities, modseqs + modseq - was)
        with self._lock:
            if self._key == before:
                messages, octets = self._totals
                self._key, self._totals = after, (messages + count, octets + size)
