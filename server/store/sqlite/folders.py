"""Folders of a SQLite mailbox: the list, create, delete, rename (INBOX's special case),
subscriptions (also of names that are not folders) and the URLAUTH keys that belong to a
folder and its UIDVALIDITY."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time

from server.store.api import (
    DELIMITER,
    FolderExists,
    FolderInfo,
    FolderNotEmpty,
    InvalidFolderName,
    NoSuchFolder,
    StoreError,
    normalize_folder,
)
from server.store.sqlite.base import FolderRow, MailboxBase
from server.store.sqlite.schema import URLAUTH_TABLE

SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)


def validate_folder(name: str) -> str:
    name = normalize_folder(name)
    if not name or len(name.encode("utf-8")) > 1000:
        raise InvalidFolderName("Invalid folder name length.")
    if any(c in name for c in "\0\r\n*%") or any(ord(c) < 32 for c in name):
        raise InvalidFolderName("Folder name contains invalid characters.")
    if any(part == "" for part in name.split(DELIMITER)):
        raise InvalidFolderName("Folder name has an empty hierarchy level.")
    return name


def parent_names(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


class Folders(MailboxBase):
    def _next_uidvalidity(self, c: sqlite3.Connection) -> int:
        row = c.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
        last = row[0] if row else 0
        value = max(int(time.time()), last + 1) & 0xFFFFFFFF or 1
        c.execute("INSERT OR REPLACE INTO meta VALUES('uidvalidity', ?)", (value,))
        return value

    def _insert_folder(
        self,
        c: sqlite3.Connection,
        name: str,
        special: str | None,
        subscribed: bool,
        uidnext: int = 1,
    ) -> int:
        cur = c.execute(
            "INSERT INTO folders(name, uidvalidity, uidnext, highestmodseq, subscribed,"
            " special_use) VALUES(?, ?, ?, 1, ?, ?)",
            (name, self._next_uidvalidity(c), uidnext, int(subscribed), special),
        )
        return int(cur.lastrowid or 0)

    def folders(self) -> list[FolderInfo]:
        with self._read() as c:
            rows = c.execute(
                "SELECT name, special_use, subscribed, hidden FROM folders ORDER BY name"
            ).fetchall()
        names = [r[0] for r in rows]
        parents = {p for n in names for p in parent_names(n)}
        return [
            FolderInfo(name, special, bool(sub), name in parents, bool(hidden))
            for name, special, sub, hidden in rows
        ]

    def create_folder(self, folder: str, special_use: str | None = None) -> None:
        folder = validate_folder(folder.removesuffix(DELIMITER))
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StoreError(f"Unsupported special-use attribute {special_use}.")
        with self._write() as c:
            if c.execute("SELECT 1 FROM folders WHERE name=?", (folder,)).fetchone():
                raise FolderExists(f"The folder {folder!r} already exists.")
            for parent in parent_names(folder):
                if not c.execute("SELECT 1 FROM folders WHERE name=?", (parent,)).fetchone():
                    self._insert_folder(c, parent, None, subscribed=False)
            lost = self._lost_subscriptions(c)
            self._insert_folder(c, folder, special_use, subscribed=folder in lost)
            if folder in lost:
                self._set_lost_subscriptions(c, lost - {folder})

    def delete_folder(self, folder: str) -> None:
        folder = normalize_folder(folder)
        if folder == "INBOX":
            raise InvalidFolderName("INBOX can't be deleted.")
        doomed: list[str] = []
        with self._write() as c:
            f = self._folder(c, folder)
            if c.execute(
                "SELECT 1 FROM folders WHERE substr(name, 1, ?) = ? LIMIT 1",
                (len(folder) + 1, folder + DELIMITER),
            ).fetchone():
                raise FolderNotEmpty(f"The folder {folder!r} has subfolders; delete them first.")
            bodies = [r[0] for r in c.execute("SELECT body FROM messages WHERE folder=?", (f.id,))]
            doomed = self._release_bodies(c, bodies)
            c.execute("DELETE FROM messages WHERE folder=?", (f.id,))
            c.execute("DELETE FROM tombstones WHERE folder=?", (f.id,))
            if c.execute("SELECT subscribed FROM folders WHERE id=?", (f.id,)).fetchone()[0]:
                self._set_lost_subscriptions(c, self._lost_subscriptions(c) | {folder})
            c.execute("DELETE FROM folders WHERE id=?", (f.id,))
        self._unlink(doomed)
        self._forget(folder)

    def rename_folder(self, old: str, new: str) -> None:
        old = normalize_folder(old)
        new = validate_folder(new.removesuffix(DELIMITER))
        with self._write() as c:
            src = self._folder(c, old)
            if new == "INBOX" or c.execute("SELECT 1 FROM folders WHERE name=?", (new,)).fetchone():
                raise FolderExists(f"The folder {new!r} already exists.")
            if new.startswith(old + DELIMITER):
                raise InvalidFolderName("A folder can't be moved into itself.")
            for parent in parent_names(new):
                if not c.execute("SELECT 1 FROM folders WHERE name=?", (parent,)).fetchone():
                    self._insert_folder(c, parent, None, subscribed=False)
            if old == "INBOX":
                self._rename_inbox(c, src, new)
            else:
                children = c.execute(
                    "SELECT id, name FROM folders WHERE name = ? OR substr(name, 1, ?) = ?",
                    (old, len(old) + 1, old + DELIMITER),
                ).fetchall()
                for _, name in children:
                    target = new + name[len(old) :]
                    if c.execute("SELECT 1 FROM folders WHERE name=?", (target,)).fetchone():
                        raise FolderExists(f"The folder {target!r} already exists.")
                for fid, name in children:
                    c.execute("UPDATE folders SET name=? WHERE id=?", (new + name[len(old) :], fid))
        self._forget(old)
        self._forget(new)

    def _rename_inbox(self, c: sqlite3.Connection, inbox: FolderRow, new: str) -> None:
        """RFC 3501 6.3.5: the messages move to a new folder; INBOX stays, empty, and its
        subfolders stay where they are. The new folder is new to clients (own
        UIDVALIDITY), so the messages keep their UIDs there."""
        fid = self._insert_folder(c, new, None, subscribed=False, uidnext=inbox.uidnext)
        modseq = inbox.highestmodseq + 1
        c.execute(
            "INSERT INTO tombstones(folder, uid, modseq, at)"
            " SELECT ?, uid, ?, ? FROM messages WHERE folder=?",
            (inbox.id, modseq, int(time.time()), inbox.id),
        )
        c.execute("UPDATE messages SET folder=?, modseq=? WHERE folder=?", (fid, modseq, inbox.id))
        c.execute("UPDATE folders SET highestmodseq=? WHERE id IN (?, ?)", (modseq, inbox.id, fid))

    def set_subscribed(self, folder: str, subscribed: bool) -> None:
        with self._write() as c:
            try:
                f = self._folder(c, folder)
            except NoSuchFolder:
                name = validate_folder(folder.removesuffix(DELIMITER))
                lost = self._lost_subscriptions(c)
                self._set_lost_subscriptions(c, lost | {name} if subscribed else lost - {name})
                return
            c.execute("UPDATE folders SET subscribed=? WHERE id=?", (int(subscribed), f.id))

    # Subscriptions of names that are not folders live in meta, not in a table of their
    # own: they are few, and no schema change is needed.
    @staticmethod
    def _lost_subscriptions(c: sqlite3.Connection) -> set[str]:
        row = c.execute("SELECT value FROM meta WHERE key='lost_subscriptions'").fetchone()
        return set(json.loads(row[0])) if row else set()

    @staticmethod
    def _set_lost_subscriptions(c: sqlite3.Connection, names: set[str]) -> None:
        c.execute(
            "INSERT OR REPLACE INTO meta VALUES('lost_subscriptions', ?)",
            (json.dumps(sorted(names), ensure_ascii=False),),
        )

    def lost_subscriptions(self) -> list[str]:
        with self._read() as c:
            lost = self._lost_subscriptions(c)
            if not lost:
                return []
            existing = {r[0] for r in c.execute("SELECT name FROM folders")}
        return sorted(lost - existing)

    def urlauth_key(self, folder: str, create: bool = False) -> bytes | None:
        with self._read() as c:
            f = self._folder(c, folder)
            try:
                row = c.execute(
                    "SELECT key FROM urlauth_keys WHERE folder=? AND uidvalidity=?",
                    (f.id, f.uidvalidity),
                ).fetchone()
            except sqlite3.OperationalError:  # no table yet: no key yet
                row = None
        if row is not None or not create:
            return row[0] if row is not None else None
        with self._write(notify=False) as c:
            c.execute(URLAUTH_TABLE)
            f = self._folder(c, folder)
            c.execute(
                "INSERT OR IGNORE INTO urlauth_keys VALUES(?, ?, ?)",
                (f.id, f.uidvalidity, secrets.token_bytes(32)),
            )
            row = c.execute(
                "SELECT key FROM urlauth_keys WHERE folder=? AND uidvalidity=?",
                (f.id, f.uidvalidity),
            ).fetchone()
        return row[0]

    def reset_urlauth_keys(self, folder: str | None = None) -> None:
        with self._write(notify=False) as c:
            c.execute(URLAUTH_TABLE)
            if folder is None:
                c.execute("DELETE FROM urlauth_keys")
            else:
                c.execute("DELETE FROM urlauth_keys WHERE folder=?", (self._folder(c, folder).id,))
