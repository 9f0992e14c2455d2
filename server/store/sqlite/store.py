"""All mailboxes of one back-end server: the mailbox objects (one per mailbox, shared by
the threads of a process), deleting a mailbox, and the UIDVALIDITYs a deleted mailbox
used."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import threading
from pathlib import Path

from server.runtime.filemodes import private_dir
from server.store.api import MailStore, StoreError
from server.store.notify import Notifier
from server.store.sqlite.files import Writers, fsync_dir, write_file
from server.store.sqlite.mailbox import SqliteMailbox
from server.store.sqlite.maintenance import check_store, prune_store
from server.store.sqlite.pool import Pool, RecentPools
from server.store.usage import mailbox_key


class SqliteMailStore(MailStore):
    """All mailboxes of one back-end server."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.mailboxes_dir = self.folder / "mailboxes"
        self.writers_dir = self.folder / "writers"
        private_dir(self.mailboxes_dir)  # mail: the service account only (filemodes)
        private_dir(self.writers_dir)
        self.notifier = Notifier(self.folder / "notify")
        self._boxes: dict[str, SqliteMailbox] = {}
        self._lock = threading.Lock()
        # Bodies are named after the process that wrote them (files.Writers).
        self.writers = Writers(self.writers_dir)
        self.token = self.writers.token
        # Called at every connection use, so the bound method itself, not a wrapper.
        self.touched = RecentPools(self._pool_of).touched
        self._closed = False

    def _pool_of(self, key: str) -> Pool | None:
        box = self._boxes.get(key)
        return box.pool if box is not None else None

    # --- mailboxes --------------------------------------------------------------------
    def mailbox(self, name: str) -> SqliteMailbox:
        return self.box_by_key(mailbox_key(name), name)

    def opened(self, name: str) -> SqliteMailbox | None:
        return self._boxes.get(mailbox_key(name))

    def box_by_key(self, key: str, name: str | None = None) -> SqliteMailbox:
        box = self._boxes.get(key)
        if box is None:
            with self._lock:
                if self._closed:
                    raise StoreError("The mailbox store is closed.")
                box = self._boxes.get(key)
                if box is None:
                    box = SqliteMailbox(self, key, name if name is not None else key)
                    self._boxes[key] = box
        return box

    def mailbox_names(self) -> list[str]:
        """Names of the mailboxes that exist in this database."""
        names = []
        for key in sorted(os.listdir(self.mailboxes_dir)):
            if key.startswith(".") or not (self.mailboxes_dir / key / "mailbox.db").exists():
                continue
            names.append(self.box_by_key(key).name)
        return names

    def delete_mailbox(self, name: str) -> None:
        key = mailbox_key(name)
        with self._lock:
            box = self._boxes.pop(key, None)
        if box is not None:
            box.close()
        path = self.mailboxes_dir / key
        if not path.exists():
            return
        self._retire_uidvalidity(key, path / "mailbox.db")
        # Renamed away first so no process can open a half-deleted mailbox.
        trash = self.mailboxes_dir / f".deleted-{key}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        fsync_dir(self.mailboxes_dir)
        shutil.rmtree(trash, ignore_errors=True)
        self.notifier.publish(key)

    # --- UIDVALIDITY across a mailbox's deletion ----------------------------------------
    # A mailbox created again under a deleted one's name must not hand out the UIDVALIDITYs
    # of the old one (RFC 3501 2.3.1.1): clients, and the caches of running back ends keyed
    # by (mailbox, folder, UIDVALIDITY, UID), would take the new messages for the old ones.
    # UIDVALIDITYs come from the clock but run ahead of it when folders are created quickly,
    # so the highest one used is kept beside the mailboxes and the new mailbox starts above.
    def _retired_path(self, key: str) -> Path:
        return self.mailboxes_dir / f".uidvalidity-{key}"

    def _retire_uidvalidity(self, key: str, db_path: Path) -> None:
        try:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                row = conn.execute(
                    "SELECT max((SELECT coalesce(max(uidvalidity), 0) FROM folders),"
                    " coalesce((SELECT value FROM meta WHERE key='uidvalidity'), 0))"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return
        last = max(int(row[0] or 0), self.retired_uidvalidity(key))
        if last:
            tmp = self._retired_path(key).with_suffix(f".{secrets.token_hex(4)}")
            write_file(tmp, str(last).encode())
            os.replace(tmp, self._retired_path(key))
            fsync_dir(self.mailboxes_dir)

    def retired_uidvalidity(self, key: str) -> int:
        """The highest UIDVALIDITY a deleted mailbox of this key used (0: none)."""
        try:
            return int(self._retired_path(key).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def check(self) -> list[str]:
        return check_store(self)

    def prune_tombstones(self, older_than_days: float) -> int:
        return prune_store(self, older_than_days)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            boxes = list(self._boxes.values())
            self._boxes.clear()
        for box in boxes:
            box.close()
        self.notifier.close()
        self.writers.close()

    def __enter__(self) -> SqliteMailStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
