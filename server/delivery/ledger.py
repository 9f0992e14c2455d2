"""What MSExchangeDelivery remembers so that a spool entry reaches each recipient at most
once, whatever the sender retries: one row per (ENVID, mailbox).

The row is written (synchronous=FULL) with the INBOX's UIDNEXT before the append and marked
done after it. A retry that finds it done answers 250 without delivering; one that finds it
pending (the service died between the append's commit and the mark) looks from that UID on
for the very same bytes before delivering again. Rows go after KEEP seconds: longer than the
spool keeps trying (server/submission/delivery.py MAX_AGE).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

KEEP = 7 * 86400.0


class DeliveryLedger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS delivered (envid TEXT NOT NULL, mailbox TEXT NOT NULL,"
                " from_uid INTEGER, done INTEGER NOT NULL DEFAULT 0, at REAL NOT NULL,"
                " PRIMARY KEY (envid, mailbox))"
            )
            self._db.execute("DELETE FROM delivered WHERE at < ?", (time.time() - KEEP,))

    def state(self, envid: str, mailbox: str) -> tuple[bool, int | None] | None:
        """(done, from_uid) of a delivery seen before, None when new."""
        with self._lock:
            row = self._db.execute(
                "SELECT done, from_uid FROM delivered WHERE envid = ? AND mailbox = ?",
                (envid, mailbox.lower()),
            ).fetchone()
        return None if row is None else (bool(row[0]), row[1])

    def begin(self, envid: str, mailbox: str, from_uid: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO delivered (envid, mailbox, from_uid, done, at)"
                " VALUES (?, ?, ?, 0, ?)",
                (envid, mailbox.lower(), from_uid, time.time()),
            )

    def done(self, envid: str, mailbox: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO delivered (envid, mailbox, from_uid, done, at)"
                " VALUES (?, ?, NULL, 1, ?)",
                (envid, mailbox.lower(), time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
