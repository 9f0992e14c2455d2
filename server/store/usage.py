"""What Get-MailboxStatistics reads from a mailbox database, with nothing but sqlite3: the
store (server.store.sqlite, server.store.quota) and the CLI's fast path (mailctl.fast) both use
these, so a script's `Get-MailboxStatistics -Output json` answers without importing the
store, pydantic or the settings models."""

from __future__ import annotations

import functools
import sqlite3

#: Messages and octets in every folder of one mailbox.db (Exchange's ItemCount, TotalItemSize).
TOTALS_SQL = "SELECT count(*), coalesce(sum(size), 0) FROM messages"


# Asked several times per login (the store, the move fences): a pure function of the name,
# kept for the names seen lately.
@functools.lru_cache(maxsize=4096)
def mailbox_key(name: str) -> str:
    """The folder name of a mailbox: case-folded (mailbox names are case-insensitive),
    with anything outside a safe set percent-encoded."""
    out = []
    for i, b in enumerate(name.casefold().encode("utf-8")):
        ch = chr(b)
        if (ch.isascii() and (ch.isalnum() or ch in "-_@+")) or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append(f"%{b:02x}")
    return "".join(out) or "%"


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    count, size = conn.execute(TOTALS_SQL).fetchone()
    return count, size


def read_totals(database: str, name: str) -> tuple[int, int]:
    """Totals of mailbox `name` in the database folder `database` (home.database(server)),
    read-only; (0, 0) when the mailbox has no database file yet (as the store, which would
    create an empty one). sqlite3.Error when the file cannot be read."""
    path = f"{database}/mailboxes/{mailbox_key(name)}/mailbox.db"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        import os

        if not os.path.exists(path):
            return 0, 0
        raise
    try:
        return totals(conn)
    finally:
        conn.close()


def exchange_size(octets: int) -> str:
    """Exchange's ByteQuantifiedSize text: "1.234 MB (1,293,844 bytes)"."""
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if octets >= size:
            value = f"{octets / size:.3f}".rstrip("0").rstrip(".")
            return f"{value} {unit} ({octets:,} bytes)"
    return f"{octets} B ({octets:,} bytes)"


def storage_status(used: int, warning: int | None, send: int | None, receive: int | None) -> str:
    """Exchange's StorageLimitStatus for `used` octets under the three quotas (None is
    Unlimited)."""
    if receive is not None and used >= receive:
        return "MailboxDisabled"
    if send is not None and used >= send:
        return "ProhibitSend"
    if warning is not None and used >= warning:
        return "IssueWarning"
    if warning is None and send is None and receive is None:
        return "NoChecking"
    return "BelowLimit"
