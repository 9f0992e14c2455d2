"""SORT, UID SORT (RFC 5256, SORT=DISPLAY RFC 5957, ESORT and CONTEXT=SORT RFC 5267),
THREAD and UID THREAD (RFC 5256) over the algorithms in ..sortthread."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from server.store import api

from .. import parser as p
from .. import search as q
from ..seqset import format_seqset
from ..session import ImapSession
from ..sortthread import EMPTY_KEYS, THREADERS, Item, SortKeys, format_threads, sort_items
from ..wire import encode_string
from . import SELECTED, command
from .fetch import Message

#: Keys that need nothing but the session's own rows (size, INTERNALDATE).
_ROW_KEYS = frozenset({"ARRIVAL", "SIZE"})


class KeysCache:
    """SortKeys by (mailbox, folder, UIDVALIDITY) then UID, shared by the sessions of a
    process: a message's keys never change, so a webmail that SORTs a folder at every
    open reads them from the store once. Bounded by the number of messages held."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._folders: OrderedDict[tuple[str, str, int], dict[int, SortKeys]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, store: api.MailboxStore, folder: str, uidvalidity: int,
            uids: Sequence[int]) -> dict[int, SortKeys]:
        key = (store.name, folder, uidvalidity)
        with self._lock:
            known = self._folders.get(key)
            if known is not None:
                self._folders.move_to_end(key)
        if known is None:
            known = {}
        missing = [u for u in uids if u not in known]
        if missing:
            got = store.sort_keys(folder, missing)
            known = {**known, **got}  # a new dict: other threads may be reading the old one
            with self._lock:
                old = self._folders.pop(key, None)
                self._held += len(known) - (len(old) if old is not None else 0)
                self._folders[key] = known
                while self._held > self.limit and len(self._folders) > 1:
                    _, dropped = self._folders.popitem(last=False)
                    self._held -= len(dropped)
        return known  # type: ignore[return-value]


KEYS = KeysCache()


def matching(s: ImapSession, key: q.SearchKey) -> list[int]:
    """Indexes into the selected folder of the messages matching `key` (as SEARCH)."""
    from .searching import compile_key

    sel = s.sel
    if isinstance(key, q.AllKey) and not sel.pending_vanished:
        return list(range(len(sel.rows)))
    pred = compile_key(s, key)
    hits: list[int] = []
    pending = sel.pending_vanished
    for i, row in enumerate(sel.rows):
        if row.uid in pending:
            continue
        try:
            if pred(i, row, Message(s, row.uid)):
                hits.append(i)
        except api.StoreError:
            continue
    return hits


def items_for(s: ImapSession, hits: Sequence[int], uid: bool, with_keys: bool = True) -> list[Item]:
    sel = s.sel
    rows = sel.rows
    keys: dict[int, SortKeys] = {}
    if with_keys and hits:
        keys = KEYS.get(s.store, sel.name, sel.uidvalidity, [rows[i].uid for i in hits])
    out = []
    empty = EMPTY_KEYS
    for i in hits:
        row = rows[i]
        out.append(Item(row.uid if uid else i + 1, i + 1, row.internaldate.timestamp(), row.size,
                        keys.get(row.uid, empty)))
    return out


def ordered_set(values: Sequence[int]) -> bytes:
    """A sequence-set that keeps the order of `values` (RFC 5267 3.2): only ascending
    runs become ranges, so "5,3:4,2,1" lists 5, 3, 4, 2, 1 in that order."""
    parts: list[str] = []
    i, n = 0, len(values)
    while i < n:
        j = i
        while j + 1 < n and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}:{values[j]}")
        i = j + 1
    return ",".join(parts).encode()


def partial_item(values: Sequence[int], partial: tuple[int, int], ordered: bool) -> bytes:
    """PARTIAL (low:high set) of RFC 5267 4.4: the results at positions low..high."""
    low, high = partial
    got = list(values[low - 1 : high])
    text = (ordered_set(got) if ordered else format_seqset(got).encode()) if got else b"NIL"
    return b"PARTIAL (%d:%d %s)" % (low, high, text)


@command(p.Sort, states=SELECTED)
def sort(s: ImapSession, cmd: p.Command) -> bytes | None:
    args: p.Sort = cmd.args  # type: ignore[assignment]
    with_modseq = q.uses_modseq(args.key)
    if with_modseq:
        s.enable_condstore()
    if s.dirty:
        s.sync(allow_expunge=False)
    sel = s.sel
    hits = matching(s, args.key)
    need_keys = any(c.key not in _ROW_KEYS for c in args.criteria)
    ordered = sort_items(items_for(s, hits, args.uid, need_keys), args.criteria)
    values = [it.number for it in ordered]
    top_modseq = max((sel.rows[it.seq - 1].modseq for it in ordered), default=0)
    opts = args.return_opts
    if opts is None:
        line = b"SORT" + b"".join(b" %d" % v for v in values)
        if with_modseq and values:
            line += b" (MODSEQ %d)" % top_modseq
        s.untagged(line)
        return None
    line = [b"ESEARCH (TAG " + encode_string(cmd.tag) + b")"]
    if args.uid:
        line.append(b"UID")
    if values:
        if "MIN" in opts:
            line.append(b"MIN %d" % values[0])
        if "MAX" in opts:
            line.append(b"MAX %d" % values[-1])
        if "ALL" in opts:
            line.append(b"ALL " + ordered_set(values))
    if "COUNT" in opts:
        line.append(b"COUNT %d" % len(values))
    if "PARTIAL" in opts and args.partial is not None:
        line.append(partial_item(values, args.partial, ordered=True))
    if with_modseq and values:
        line.append(b"MODSEQ %d" % top_modseq)
    s.untagged(b" ".join(line))
    if "UPDATE" in opts:
        from .context import Context, register

        register(s, Context(cmd.tag, args.key, args.uid, args.criteria,
                            [sel.rows[it.seq - 1].uid for it in ordered]))
    return None


@command(p.Thread, states=SELECTED)
def thread(s: ImapSession, cmd: p.Command) -> bytes | None:
    args: p.Thread = cmd.args  # type: ignore[assignment]
    if q.uses_modseq(args.key):
        s.enable_condstore()
    if s.dirty:
        s.sync(allow_expunge=False)
    hits = matching(s, args.key)
    roots = THREADERS[args.algorithm](items_for(s, hits, args.uid))
    s.untagged(b"THREAD " + format_threads(roots) if roots else b"THREAD")
    return None
