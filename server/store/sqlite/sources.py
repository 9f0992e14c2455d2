"""What message_sources() gives of a folder's messages (file name, header block), kept per
folder as of the folder's HIGHESTMODSEQ and shared by the sessions of a process.

A client opening a folder fetches the same header fields of every message at each session,
and the lookup of 200 header blocks was most of the store's work in such a session. A UID
names one message for ever within a UIDVALIDITY and message files never change, so an
entry can only become wrong by its message being expunged: every expunge (by this process
or another) raises the folder's HIGHESTMODSEQ and leaves a tombstone with that MODSEQ, so
a lookup that sees a newer HIGHESTMODSEQ drops the UIDs of the tombstones since (or the
whole folder when tombstones that old were pruned, or the folder was replaced) before it
answers from the cache. Flag changes and new messages raise the MODSEQ too and drop
nothing; new messages are looked up as misses.

Memory: header blocks of all cached folders of the process together stay under BUDGET
octets; past it the folder used longest ago is dropped whole."""

from __future__ import annotations

import threading
from collections import OrderedDict

from server.store.api import MessageSource

#: Octets of header blocks (and a per-entry allowance) kept per process.
BUDGET = 32 * 1024 * 1024
#: What an entry costs besides its header block: the dict slot, the tuple, the file name.
ENTRY_OVERHEAD = 160


class FolderSources:
    """One folder's MessageSource (file path, header block or None) by UID, valid as of
    `modseq`: the very object a lookup hands out, built once per message."""

    __slots__ = ("folder_id", "uidvalidity", "modseq", "entries", "octets", "dead")

    def __init__(self, folder_id: int, uidvalidity: int, modseq: int) -> None:
        self.folder_id = folder_id
        self.uidvalidity = uidvalidity
        self.modseq = modseq
        self.entries: dict[int, MessageSource] = {}
        self.octets = 0
        self.dead = False  # dropped for the budget: empty, and never filled again

    def put(self, uid: int, source: MessageSource) -> int:
        """Keep one entry; returns the octets it added."""
        old = self.entries.get(uid)
        header = source.header
        if old is not None and (header is None or old.header is not None):
            return 0
        self.entries[uid] = source
        added = (len(header) if header is not None else 0) + (0 if old else ENTRY_OVERHEAD)
        self.octets += added
        return added

    def drop(self, uids: list[int]) -> int:
        freed = 0
        for uid in uids:
            old = self.entries.pop(uid, None)
            if old is not None:
                header = old.header
                freed += ENTRY_OVERHEAD + (len(header) if header is not None else 0)
        self.octets -= freed
        return freed


class Budget:
    """The process-wide bound on cached header blocks, least recently used folder first.
    Callers hold `lock` around every read and change of the FolderSources it tracks."""

    def __init__(self, limit: int = BUDGET) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.total = 0
        self._order: OrderedDict[int, FolderSources] = OrderedDict()

    def used(self, folder: FolderSources) -> None:
        key = id(folder)
        if key in self._order:
            self._order.move_to_end(key)
        elif not folder.dead:
            self._order[key] = folder

    def grew(self, octets: int) -> None:
        self.total += octets
        while self.total > self.limit and self._order:
            _, oldest = self._order.popitem(last=False)
            self.forget(oldest)

    def shrank(self, octets: int) -> None:
        self.total -= octets

    def forget(self, folder: FolderSources) -> None:
        """`folder` is no longer used (replaced, or over the budget): free what it holds."""
        self._order.pop(id(folder), None)
        self.total -= folder.octets
        folder.entries = {}
        folder.octets = 0
        folder.dead = True


BUDGET_OF_PROCESS = Budget()
