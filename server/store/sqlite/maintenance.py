"""Upkeep of a SQLite mailbox and of a server's store: orphan cleanup, the integrity check
(fsck), tombstone pruning and the rows an export reads.

Orphans: a body file is written and fsync'd before the transaction that names it commits,
so a crash in between leaves a file no row names. Such a file is removed when a process
first opens the mailbox and by check(), once the process that wrote it is dead (its writer
lock is free, see files.Writers) or it is older than ORPHAN_AGE. The folder is listed
before the rows are read, so a file committed in between counts as known, never as an
orphan.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from server.store.sqlite.base import MailboxBase
from server.store.sqlite.rows import join_date, parse_flags

if TYPE_CHECKING:
    from server.store.sqlite.store import SqliteMailStore

ORPHAN_AGE = 3600.0  # seconds after which an unreferenced body is garbage whoever wrote it


class Maintenance(MailboxBase):
    def prune_tombstones(self, before: float) -> int:
        """Drop the tombstones of expunges before `before` (Unix time); returns how many.
        Not a change clients see (no MODSEQ, no notification): each folder remembers the
        highest MODSEQ and UID dropped, and changes_since() and snapshot() answer older
        MODSEQs from that."""
        cutoff = int(before)
        total = 0
        with self._write(notify=False) as c:
            for fid, modseq, uid, count in c.execute(
                "SELECT folder, max(modseq), max(uid), count(*) FROM tombstones WHERE at < ?"
                " GROUP BY folder",
                (cutoff,),
            ).fetchall():
                c.execute(
                    "UPDATE folders SET pruned_modseq = max(pruned_modseq, ?),"
                    " pruned_uid = max(pruned_uid, ?) WHERE id=?",
                    (modseq, uid, fid),
                )
                total += count
            if total:
                c.execute("DELETE FROM tombstones WHERE at < ?", (cutoff,))
        return total

    # --- maintenance ----------------------------------------------------------------------------
    def clean_orphans(self) -> list[str]:
        """Remove body files no row refers to whose writer is gone (or that are old)."""
        names = os.listdir(self.msgs)  # listed before reading rows: see the module docstring
        with self._read() as c:
            known = {r[0] for r in c.execute("SELECT file FROM bodies")}
        removed = []
        alive: dict[str, bool] = {}
        now = time.time()
        for name in names:
            if name in known:
                continue
            token = name.rpartition(".")[0]
            if token not in alive:
                alive[token] = self.store.writers.alive(token)
            if alive[token]:
                try:
                    if now - os.stat(self.msgs / name).st_mtime < ORPHAN_AGE:
                        continue
                except FileNotFoundError:
                    continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.msgs / name)
                removed.append(name)
        return removed

    def check(self) -> list[str]:
        problems: list[str] = []
        self.clean_orphans()
        with self._read() as c:
            result = [r[0] for r in c.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                problems.extend(f"SQLite: {r}" for r in result)
            folders = {
                r[0]: r
                for r in c.execute(
                    "SELECT id, name, uidvalidity, uidnext, highestmodseq FROM folders"
                )
            }
            validities = [r[2] for r in folders.values()]
            if len(set(validities)) != len(validities):
                problems.append("two folders share a UIDVALIDITY")
            for _fid, name, _, uidnext, highest, max_uid, max_modseq in c.execute(
                "SELECT f.id, f.name, f.uidvalidity, f.uidnext, f.highestmodseq,"
                " max(m.uid), max(m.modseq) FROM folders f JOIN messages m ON m.folder=f.id"
                " GROUP BY f.id"
            ):
                if max_uid >= uidnext:
                    problems.append(f"{name}: UID {max_uid} is not below UIDNEXT {uidnext}")
                if max_modseq > highest:
                    problems.append(f"{name}: MODSEQ {max_modseq} above HIGHESTMODSEQ {highest}")
            for fid, max_uid, max_modseq in c.execute(
                "SELECT folder, max(uid), max(modseq) FROM tombstones GROUP BY folder"
            ):
                f = folders.get(fid)
                if f is None:
                    problems.append(f"tombstones of a missing folder {fid}")
                elif max_uid >= f[3] or max_modseq > f[4]:
                    problems.append(f"{f[1]}: a tombstone is beyond UIDNEXT/HIGHESTMODSEQ")
            for fid, count in c.execute(
                "SELECT folder, count(*) FROM messages WHERE folder NOT IN"
                " (SELECT id FROM folders) GROUP BY folder"
            ):
                problems.append(f"{count} messages in a missing folder {fid}")
            for body, count in c.execute(
                "SELECT m.body, count(*) FROM messages m LEFT JOIN bodies b ON b.id=m.body"
                " WHERE b.id IS NULL GROUP BY m.body"
            ):
                problems.append(f"{count} messages refer to a missing body {body}")
            used = dict(c.execute("SELECT body, count(*) FROM messages GROUP BY body"))
            for body, refs in c.execute("SELECT id, refs FROM bodies"):
                if refs != used.get(body, 0):
                    problems.append(
                        f"body {body} counts {refs} references but has {used.get(body, 0)}"
                    )
            bodies = c.execute("SELECT id, file, size FROM bodies").fetchall()
            mismatched = c.execute(
                "SELECT count(*) FROM messages m JOIN bodies b ON b.id=m.body"
                " WHERE m.size != b.size"
            ).fetchone()[0]
            if mismatched:
                problems.append(f"{mismatched} messages disagree with their body's size")
        for body, file, size in bodies:
            try:
                actual = os.stat(self.msgs / file).st_size
            except FileNotFoundError:
                problems.append(f"body {body} ({file}) is missing")
                continue
            if actual != size:
                problems.append(f"body {body} ({file}) has {actual} octets, expected {size}")
        return problems

    # --- export ---------------------------------------------------------------------------------
    def export_rows(self, folder: str) -> list[tuple[int, frozenset[str], datetime, Path, bool]]:
        """(uid, flags, internaldate, body file, imported-with-LF) of every message."""
        with self._read() as c:
            f = self._folder(c, folder)
            rows = c.execute(
                "SELECT m.uid, m.flags, m.idate, m.tz, b.file, b.lf FROM messages m"
                " JOIN bodies b ON b.id=m.body WHERE m.folder=? ORDER BY m.uid",
                (f.id,),
            ).fetchall()
        return [
            (uid, parse_flags(flags), join_date(idate, tz), self.msgs / file, bool(lf))
            for uid, flags, idate, tz, file, lf in rows
        ]


def check_store(store: SqliteMailStore) -> list[str]:
    """check() of every mailbox of the store, after removing what a crash left of deleted
    mailboxes, and the lock files of dead writers."""
    problems: list[str] = []
    for key in sorted(os.listdir(store.mailboxes_dir)):
        if key.startswith(".deleted-"):
            shutil.rmtree(store.mailboxes_dir / key, ignore_errors=True)
            continue
        if not (store.mailboxes_dir / key / "mailbox.db").exists():
            continue
        box = store.box_by_key(key)
        problems.extend(f"{box.name}: {p}" for p in box.check())
    store.writers.clean()
    return problems


def prune_store(store: SqliteMailStore, older_than_days: float) -> int:
    before = time.time() - older_than_days * 86400
    return sum(store.mailbox(name).prune_tombstones(before) for name in store.mailbox_names())
