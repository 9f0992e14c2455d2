"""One user's mailbox: the parts (folders, reads, writes, maintenance) put together, and
what is the mailbox's own: opening (schema created or upgraded, orphans removed), change
notification and the POP3 maildrop lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from server.store.api import DEFAULT_FOLDERS, MailboxInUse
from server.store.sqlite import schema
from server.store.sqlite.files import fsync_dir
from server.store.sqlite.folders import Folders
from server.store.sqlite.maintenance import Maintenance
from server.store.sqlite.reads import Reads
from server.store.sqlite.writes import Writes

if TYPE_CHECKING:
    from server.store.sqlite.store import SqliteMailStore


class SqliteMailbox(Folders, Reads, Writes, Maintenance):
    def __init__(self, store: SqliteMailStore, key: str, name: str) -> None:
        super().__init__(store, key, name)
        self._init_db()
        self.clean_orphans()
        self.name = self.stored_name()

    # --- set-up ------------------------------------------------------------------------
    def _init_db(self) -> None:
        with self.pool.conn() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version == schema.SCHEMA_VERSION:
                return
            c.execute("BEGIN IMMEDIATE")
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version == schema.SCHEMA_VERSION:
                c.execute("ROLLBACK")
                return
            if 0 < version < schema.SCHEMA_VERSION:
                schema.upgrade(c, version)
            else:
                schema.create(c)
                c.execute("INSERT OR REPLACE INTO meta VALUES('name', ?)", (self.name,))
                retired = self.store.retired_uidvalidity(self.key)
                if retired:
                    c.execute("INSERT OR REPLACE INTO meta VALUES('uidvalidity', ?)", (retired,))
                for folder, special in DEFAULT_FOLDERS.items():
                    self._insert_folder(c, folder, special, subscribed=True)
            c.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION}")
            c.execute("COMMIT")
        fsync_dir(self.dir)  # the new database file's name is durable too

    def stored_name(self) -> str:
        with self.pool.conn() as c:
            row = c.execute("SELECT value FROM meta WHERE key='name'").fetchone()
        return row[0] if row else self.name

    def close(self) -> None:
        self.pool.close()

    # --- notification and locking -------------------------------------------------------
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self.store.notifier.subscribe(self.key, callback)

    def change_generation(self) -> int | None:
        return self.store.notifier.generation(self.key)

    def lock_maildrop(self) -> Callable[[], None]:
        fd = os.open(self.dir / "pop3.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MailboxInUse("The mailbox is in use by another POP3 session.") from None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                os.close(fd)

        return release
