"""The tables of one mailbox.db, its schema versions and the upgrades between them.

PRAGMA user_version holds SCHEMA_VERSION. A new database gets SCHEMA; an older one is
upgraded in place (upgrade()) inside the transaction that opens it, so a crash leaves it at
the old version, and the next open upgrades it again.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.protocols.imap.sortthread import SortKeys

SCHEMA_VERSION = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders(
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: see NEVER_REUSED
    name TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    subscribed INTEGER NOT NULL DEFAULT 0,
    special_use TEXT,
    hidden INTEGER NOT NULL DEFAULT 0,
    pruned_modseq INTEGER NOT NULL DEFAULT 0,  -- highest MODSEQ of a pruned tombstone
    pruned_uid INTEGER NOT NULL DEFAULT 0      -- highest UID of a pruned tombstone
);
CREATE TABLE IF NOT EXISTS bodies(
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: see NEVER_REUSED
    file TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL,
    lf INTEGER NOT NULL DEFAULT 0,  -- imported with bare LF line ends, stored as CRLF
    info TEXT,                       -- server.protocols.imap.bodystructure.MessageInfo.to_json()
    header BLOB                      -- the top-level header (info's header_len octets)
);
CREATE TABLE IF NOT EXISTS messages(
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    body INTEGER NOT NULL,
    flags TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    idate INTEGER NOT NULL,  -- INTERNALDATE, Unix seconds
    tz INTEGER NOT NULL,     -- its UTC offset in minutes
    size INTEGER NOT NULL,
    recent INTEGER NOT NULL,
    PRIMARY KEY(folder, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages(folder, modseq);
CREATE INDEX IF NOT EXISTS messages_recent ON messages(folder) WHERE recent=1;
CREATE TABLE IF NOT EXISTS tombstones(
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    at INTEGER NOT NULL DEFAULT 0,  -- when it was expunged, Unix seconds
    PRIMARY KEY(folder, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_modseq ON tombstones(folder, modseq);
CREATE TABLE IF NOT EXISTS sortkeys(  -- SORT/THREAD keys (RFC 5256) of a body, see sort_keys
    body INTEGER PRIMARY KEY,  -- bodies.id: the row goes with its body (release_bodies)
    file TEXT NOT NULL,      -- bodies.file, for checking
    v INTEGER NOT NULL,      -- sortthread.SORTKEYS_VERSION that computed the row
    subject TEXT NOT NULL,   -- the keys are collation keys (sortthread.collation_key)
    reply INTEGER NOT NULL,
    from_ TEXT NOT NULL,
    to_ TEXT NOT NULL,
    cc TEXT NOT NULL,
    dfrom TEXT NOT NULL,
    dto TEXT NOT NULL,
    sent INTEGER,            -- Date: in Unix seconds, NULL when absent or unparsable
    msgid TEXT NOT NULL,
    refs TEXT NOT NULL       -- message ids separated by spaces
) WITHOUT ROWID;
"""

# Tables whose ids name things outside the database too (caches in this and other
# processes, derived data written back by id), so an id must never come back after a delete.
# Without AUTOINCREMENT SQLite hands out max(id)+1, which reuses the id of the newest row
# once it is deleted: an EXPUNGE or DELETE followed by an APPEND then served the expunged
# message's MessageInfo for the new body. Schema 4 rebuilds them (ids kept) where a database
# was created without it.
NEVER_REUSED = ("folders", "bodies")

# Columns added since version 1 (table, column, definition), added where missing:
# 2 dated the tombstones (counted from the upgrade) to prune them; 3 keeps each body's
# header block so header-only FETCH items never read the file (filled in lazily for the
# bodies stored before, see message_sources). 4 rebuilt folders and bodies with
# AUTOINCREMENT (NEVER_REUSED); 5 added the sortkeys table (filled in lazily for the bodies
# stored before, see sort_keys).
ADDED_COLUMNS = (
    ("folders", "pruned_modseq", "INTEGER NOT NULL DEFAULT 0"),
    ("folders", "pruned_uid", "INTEGER NOT NULL DEFAULT 0"),
    ("tombstones", "at", "INTEGER NOT NULL DEFAULT 0"),
    ("bodies", "header", "BLOB"),
)

# URLAUTH access keys have their own table, made on first use (no schema version needed:
# older mailboxes simply have no keys yet). A key belongs to a folder id and its UIDVALIDITY.
URLAUTH_TABLE = (
    "CREATE TABLE IF NOT EXISTS urlauth_keys(folder INTEGER NOT NULL,"
    " uidvalidity INTEGER NOT NULL, key BLOB NOT NULL,"
    " PRIMARY KEY(folder, uidvalidity)) WITHOUT ROWID"
)

SORTKEYS_INSERT = "INSERT OR REPLACE INTO sortkeys VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# sortthread.SortKeys field -> sortkeys column
SORTKEY_COLUMNS = {
    "subject": "subject",
    "reply": "reply",
    "from_": "from_",
    "to": "to_",
    "cc": "cc",
    "display_from": "dfrom",
    "display_to": "dto",
    "sent": "sent",
    "message_id": "msgid",
    "references": "refs",
}


def create(c: sqlite3.Connection) -> None:
    """The tables of SCHEMA that are missing (all of them in a new database)."""
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            c.execute(stmt)


def upgrade(c: sqlite3.Connection, version: int) -> None:
    """Bring a database of schema `version` to SCHEMA_VERSION, in the caller's transaction."""
    for table, column, definition in ADDED_COLUMNS:
        have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    if version < 2:
        c.execute("UPDATE tombstones SET at=?", (int(time.time()),))
    if version < 4:
        autoincrement(c)
    create(c)  # tables added since (all IF NOT EXISTS)


def autoincrement(c: sqlite3.Connection) -> None:
    """Rebuild the tables of NEVER_REUSED with AUTOINCREMENT, rows and ids kept (SQLite
    can't ALTER a key), inside the caller's transaction. Their sequences start at the
    highest id in use."""
    for table in NEVER_REUSED:
        sql = c.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)
        ).fetchone()[0]
        if "AUTOINCREMENT" in sql.upper():
            continue
        head, sep, rest = sql.partition("id INTEGER PRIMARY KEY")
        assert sep, f"unexpected schema of {table}: {sql}"
        c.execute(f"ALTER TABLE {table} RENAME TO {table}_v3")
        c.execute(head + sep + " AUTOINCREMENT" + rest)
        cols = ", ".join(r[1] for r in c.execute(f"PRAGMA table_info({table}_v3)"))
        c.execute(f"INSERT INTO {table}({cols}) SELECT {cols} FROM {table}_v3")
        c.execute(f"DROP TABLE {table}_v3")


def sortkeys_row(body: int, file: str, header: bytes, keys: SortKeys | None = None) -> tuple | None:
    """The sortkeys row of a body from its header block (or its SortKeys, when known);
    None if that fails on a pathological message (computed again on first use)."""
    try:
        from server.protocols.imap.sortthread import SORTKEYS_VERSION, sort_keys_from_header

        k = keys if keys is not None else sort_keys_from_header(header)
    except Exception:  # noqa: BLE001 - must not stop delivery
        return None
    return (
        body,
        file,
        SORTKEYS_VERSION,
        k.subject,
        int(k.reply),
        k.from_,
        k.to,
        k.cc,
        k.display_from,
        k.display_to,
        k.sent,
        k.message_id,
        " ".join(k.references),
    )
