"""The mailbox store: `open_store(home, server)` gives the mailbox database of one server.

The contract is in server.store.api; the SQLite implementation in server.store.db.
"""

from __future__ import annotations

import re

from server.settings.paths import Home
from server.store.api import MailboxStore, MailStore
from server.store.db import NewMessage, SqliteMailbox, SqliteMailStore

__all__ = [
    "MailStore",
    "MailboxStore",
    "NewMessage",
    "SqliteMailStore",
    "SqliteMailbox",
    "normalize_crlf",
    "open_store",
]

_BARE_LF = re.compile(rb"(?<!\r)\n")


def open_store(home: Home, server: str) -> SqliteMailStore:
    """The mailbox database of `server` (created on first use). Close it when done."""
    return SqliteMailStore(home.database(server))


def normalize_crlf(raw: bytes) -> bytes:
    """Bare LF -> CRLF (what IMAP and POP3 need); CRLF and lone CR are left alone."""
    if b"\n" not in raw:
        return raw
    return _BARE_LF.sub(b"\r\n", raw)
