"""The SQLite mailbox store: SQLite metadata per mailbox, message bodies as immutable files.

Layout of one server's database folder (home.database(server)):

    mailboxes/<key>/mailbox.db      folders, messages, bodies, tombstones (SQLite, WAL)
    mailboxes/<key>/msgs/<file>     message bodies, written once, never changed
    mailboxes/<key>/pop3.lock       POP3 maildrop lock (flock)
    writers/<token>.lock            held by each writing process (tells live from dead)
    notify/<pid>-<rand>.sock        change notification sockets (see server/store/notify.py)

One SQLite file per mailbox, so writers to different mailboxes never contend. Durability:
a body file is written and fsync'd (file, then folder) before the transaction that
references it commits with synchronous=FULL, so whatever a method returned is on disk and
a crash leaves at worst an unreferenced file, which maintenance.py removes.

Bodies are shared by COPY (refcount in `bodies`), so copies cost no bytes on disk. Every
change to a folder takes one new MODSEQ (the folder's HIGHESTMODSEQ + 1) for all the
messages it touches; expunged UIDs stay as tombstones with the MODSEQ of their expunge.

Tombstones are what QRESYNC's VANISHED answers come from; prune_tombstones() drops those of
expunges older than a few days and remembers, per folder, the highest MODSEQ and UID it
dropped. A client whose MODSEQ is older than that is answered conservatively: every UID up
to the highest dropped one that no longer exists counts as vanished (see changes_since).

The modules: schema (tables, versions, upgrades), files (body files: naming, fsync,
atomic writes), pool (connections, many-UID queries), rows (flags and dates as stored),
base (what the parts of a mailbox share), folders, reads, writes, maintenance (orphans,
fsck, prune, export), mailbox (the parts put together), store (all mailboxes of a server).
"""

from __future__ import annotations

from server.store.sqlite.mailbox import SqliteMailbox
from server.store.sqlite.schema import SCHEMA_VERSION
from server.store.sqlite.store import SqliteMailStore

__all__ = ["SCHEMA_VERSION", "SqliteMailStore", "SqliteMailbox"]
