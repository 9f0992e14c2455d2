"""The mailbox store: `open_store(home, server)` gives the mailbox database of one server.

The contract is in server.store.api; the SQLite implementation in server.store.sqlite.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.settings.paths import Home
    from server.store.api import MailboxStore, MailStore, NewMessage
    from server.store.sqlite import SqliteMailbox, SqliteMailStore

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


# The SQLite store is imported on first use, not with the package: `import
# server.store.usage` (the CLI's fast path) must not pay for server.store.sqlite.
_LAZY = {
    "MailStore": "api",
    "MailboxStore": "api",
    "NewMessage": "api",
    "SqliteMailStore": "sqlite",
    "SqliteMailbox": "sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def open_store(home: Home, server: str) -> SqliteMailStore:
    """The mailbox database of `server` (created on first use). Close it when done."""
    from server.store.sqlite import SqliteMailStore

    return SqliteMailStore(home.database(server))


def normalize_crlf(raw: bytes) -> bytes:
    """Bare LF -> CRLF (what IMAP and POP3 need); CRLF and lone CR are left alone."""
    if b"\n" not in raw:
        return raw
    return _BARE_LF.sub(b"\r\n", raw)
