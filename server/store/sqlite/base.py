"""What every part of a SQLite mailbox shares: its paths, its connections and
transactions, the folder lookup, the body reference counts and the cache of folder
listings. The parts (folders, reads, writes, maintenance) are mixins over MailboxBase,
put together in mailbox.SqliteMailbox."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.runtime.filemodes import private_dir
from server.store.api import DELIMITER, MailboxStore, MessageRow, NoSuchFolder, normalize_folder
from server.store.sqlite import pool
from server.store.sqlite.files import fsync_dir
from server.store.sqlite.sources import FolderSources
from server.store.sqlite.totals import KEY_TABLE, FolderKey, UsageTotals

if TYPE_CHECKING:
    from server.store.sqlite.store import SqliteMailStore


#: The folders columns a FolderRow is built from, in its fields' order.
FOLDER_COLUMNS = "id, name, uidvalidity, uidnext, highestmodseq, pruned_modseq, pruned_uid"


@dataclass
class FolderRow:
    """A folders row, as the transaction that read it saw it."""

    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    pruned_modseq: int = 0
    pruned_uid: int = 0


@dataclass
class Cached:
    """A folder's message list and counts as of a MODSEQ, updated incrementally."""

    folder_id: int
    uidvalidity: int
    modseq: int
    rows: dict[int, MessageRow]
    ordered: list[MessageRow] | None = None
    unseen: int = 0
    size: int = 0
    deleted: int = 0

    def count(self, row: MessageRow, sign: int) -> None:
        self.size += sign * row.size
        if "\\Seen" not in row.flags:
            self.unseen += sign
        if "\\Deleted" in row.flags:
            self.deleted += sign


class MailboxBase(MailboxStore):
    def __init__(self, store: SqliteMailStore, key: str, name: str) -> None:
        self.store = store
        self.key = key
        self.name = name
        self.dir = store.mailboxes_dir / key
        self.msgs = self.dir / "msgs"
        fresh = not self.msgs.exists()
        private_dir(self.msgs)
        # SQLite creates the database with the umask's mode and gives its -wal and -shm
        # files the database's mode: create it owner-only first.
        os.close(os.open(self.dir / "mailbox.db", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        if fresh:
            fsync_dir(self.dir)
            fsync_dir(store.mailboxes_dir)
        self.pool = pool.Pool(self.dir / "mailbox.db", lambda: store.touched(key), self.msgs)
        self._cache: dict[str, Cached] = {}
        # message_sources' file names and header blocks per folder (sources.py).
        self._sources: dict[str, FolderSources] = {}
        self._cache_lock = threading.Lock()
        # MessageInfo by body file name: a name is never given twice (writer token and
        # sequence), so an entry can't outlive its message into another one's.
        self._infos: OrderedDict[str, object] = OrderedDict()
        self._usage = UsageTotals()

    # --- transactions ----------------------------------------------------------------
    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self.pool.conn() as c:
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self, notify: bool = True) -> Iterator[sqlite3.Connection]:
        with self.pool.conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
        if notify:
            self.store.notifier.publish(self.key)

    # --- lookups ------------------------------------------------------------------------
    def _folder(self, c: sqlite3.Connection, name: str) -> FolderRow:
        name = normalize_folder(name)
        row = c.execute(f"SELECT {FOLDER_COLUMNS} FROM folders WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NoSuchFolder(f"The folder {name!r} doesn't exist.")
        return FolderRow(*row)

    def _folder_keyed(self, c: sqlite3.Connection, name: str) -> tuple[FolderRow, FolderKey]:
        """_folder() and folder_key() in one statement (an append's quota check)."""
        name = normalize_folder(name)
        row = c.execute(
            f"SELECT {FOLDER_COLUMNS}, k.n, k.i, k.v, k.m FROM folders, {KEY_TABLE} WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            raise NoSuchFolder(f"The folder {name!r} doesn't exist.")
        return FolderRow(*row[:-4]), (row[-4], row[-3], row[-2], row[-1])

    @staticmethod
    def _select_rows(
        c: sqlite3.Connection, folder_id: int, uids: Sequence[int], cols: str
    ) -> list[tuple]:
        return pool.select_rows(c, folder_id, uids, cols)

    # --- bodies ---------------------------------------------------------------------------
    @staticmethod
    def _release_bodies(c: sqlite3.Connection, bodies: list[int]) -> list[str]:
        """Drop one reference per entry; returns the files no message uses any more (to be
        unlinked after the commit: a crash before that leaves an orphan, never a hole)."""
        if not bodies:
            return []
        c.executemany("UPDATE bodies SET refs = refs - 1 WHERE id=?", [(b,) for b in bodies])
        ids = sorted(set(bodies))
        doomed: list[tuple[int, str]] = []
        for i in range(0, len(ids), pool.IN_CHUNK):
            chunk = ids[i : i + pool.IN_CHUNK]
            doomed.extend(
                c.execute(
                    f"SELECT id, file FROM bodies WHERE refs <= 0 AND id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        c.executemany("DELETE FROM bodies WHERE id=?", [(d[0],) for d in doomed])
        c.executemany("DELETE FROM sortkeys WHERE body=?", [(d[0],) for d in doomed])
        return [d[1] for d in doomed]

    def _unlink(self, files: list[str]) -> None:
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.msgs / name)

    # --- the folder cache ---------------------------------------------------------------
    def _forget(self, folder: str) -> None:
        with self._cache_lock:
            for name in list(self._cache):
                if name == folder or name.startswith(folder + DELIMITER):
                    del self._cache[name]
