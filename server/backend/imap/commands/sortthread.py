"""SORT, UID SORT (RFC 5256, SORT=DISPLAY RFC 5957, ESORT and CONTEXT=SORT RFC 5267),
THREAD and UID THREAD (RFC 5256) over the algorithms in ..sortthread."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.commands.searching import (
    Context,
    ordered_set,
    partial_item,
    register,
    searched,
)
from server.backend.imap.session import ImapSession
from server.protocols.imap import requests as rq
from server.protocols.imap import search as q
from server.protocols.imap.sortthread import (
    EMPTY_KEYS,
    THREADERS,
    Item,
    SortCriterion,
    SortKeys,
    format_threads,
    sort_positions,
)
from server.protocols.imap.wire import encode_string
from server.store import api


class KeysCache:
    """Sort keys by (mailbox, folder, UIDVALIDITY), then by SortKeys field, then by UID,
    shared by the sessions of a process: a message's keys never change, so a webmail
    that SORTs a folder at every open reads them from the store once, and only the
    fields its sorts use. Bounded by the number of values held."""

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self._folders: OrderedDict[tuple[str, str, int], dict[str, dict[int, object]]] = (
            OrderedDict()
        )
        self._held = 0
        self._lock = threading.Lock()

    def get(
        self,
        store: api.MailboxStore,
        folder: str,
        uidvalidity: int,
        uids: Sequence[int],
        fields: Sequence[str],
    ) -> list[dict[int, object]]:
        """One {uid: value} per field (messages gone meanwhile may be absent)."""
        key = (store.name, folder, uidvalidity)
        with self._lock:
            columns = self._folders.get(key)
            if columns is not None:
                self._folders.move_to_end(key)
        if columns is None:
            columns = {}
        lacking: set[int] = set()
        short = []
        for f in fields:
            have = columns.get(f, {})
            miss = [u for u in uids if u not in have]
            if miss:
                lacking.update(miss)
                short.append(f)
        if not short:
            return [columns.get(f, {}) for f in fields]
        got = store.sort_keys(folder, sorted(lacking), short)
        for n, f in enumerate(short):
            self.put(store, folder, uidvalidity, f, {uid: values[n] for uid, values in got.items()})  # type: ignore[index]
        with self._lock:
            columns = self._folders.get(key) or {}
        return [columns.get(f, {}) for f in fields]

    def put(
        self,
        store: api.MailboxStore,
        folder: str,
        uidvalidity: int,
        field: str,
        values: dict[int, object],
    ) -> dict[int, object]:
        """Add values of a field; returns the field's {uid: value}. Updated in place:
        readers only look single UIDs up, which the GIL keeps whole."""
        key = (store.name, folder, uidvalidity)
        with self._lock:
            columns = self._folders.get(key)
            if columns is None:
                columns = self._folders[key] = {}
            self._folders.move_to_end(key)
            col = columns.setdefault(field, {})
            before = len(col)
            col.update(values)
            self._held += len(col) - before
            while self._held > self.limit and len(self._folders) > 1:
                old_key, dropped = self._folders.popitem(last=False)
                self._held -= sum(len(c) for c in dropped.values())
                if old_key == key:  # never drop the folder being filled
                    self._folders[key] = dropped
                    self._held += sum(len(c) for c in dropped.values())
                    break
        return col


KEYS = KeysCache()


class ResultCache:
    """The last SORT orders and THREAD answers per (mailbox, folder, UIDVALIDITY, what
    was asked), each valid for exactly the set of messages it was computed from: keys
    never change, so the same matching messages give the same answer, and a webmail that
    opens a folder again gets it without sorting."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._data: OrderedDict[tuple[object, ...], tuple[tuple[int, ...], object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], basis: tuple[int, ...]) -> object | None:
        with self._lock:
            found = self._data.get(key)
            if found is None or found[0] != basis:
                return None
            self._data.move_to_end(key)
            return found[1]

    def put(self, key: tuple[object, ...], basis: tuple[int, ...], value: object) -> None:
        with self._lock:
            self._data[key] = (basis, value)
            self._data.move_to_end(key)
            while len(self._data) > self.limit:
                self._data.popitem(last=False)


RESULTS = ResultCache()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """SORT/THREAD of a big folder allocate tens of thousands of small objects at once,
    which would start several collections of the whole process heap; none of them is
    garbage, so collection waits until the command's work is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _columns(s: ImapSession, hits: Sequence[int], fields: Sequence[str]) -> list[list[object]]:
    """For each SortKeys field, its values for the messages at `hits`, in that order."""
    sel = s.sel
    rows = sel.rows
    uids = [rows[i].uid for i in hits]
    if not uids:
        return [[] for _ in fields]
    found = KEYS.get(s.store, sel.name, sel.uidvalidity, uids, fields)
    out = []
    for f, col in zip(fields, found, strict=True):
        get, default = col.get, EMPTY_KEYS[SortKeys._fields.index(f)]
        out.append([get(u, default) for u in uids])
    return out


_THREAD_FIELDS = ("subject", "reply", "sent", "message_id", "references")


def items_for(s: ImapSession, hits: Sequence[int], uid: bool) -> list[Item]:
    """THREAD's view of the messages at `hits`: only the keys threading uses, read and
    built once per message and process (KeysCache field "thread")."""
    sel = s.sel
    rows = sel.rows
    uids = [rows[i].uid for i in hits]
    if not uids:
        return []
    (have,) = KEYS.get(s.store, sel.name, sel.uidvalidity, [], ("thread",))
    lacking = [u for u in uids if u not in have]
    if lacking:
        new = tuple.__new__
        built = dict.fromkeys(lacking, EMPTY_KEYS)
        for u, (subject, reply, sent, msgid, refs) in s.store.sort_keys(  # type: ignore[misc]
            sel.name, lacking, _THREAD_FIELDS
        ).items():
            built[u] = new(
                SortKeys,
                (subject, reply, "", "", "", "", "", sent, msgid, refs.split() if refs else ()),
            )
        have = KEYS.put(s.store, sel.name, sel.uidvalidity, "thread", built)
    new = tuple.__new__
    get = have.get
    empty = EMPTY_KEYS
    out = []
    for i, u in zip(hits, uids, strict=True):
        row = rows[i]
        k = get(u, empty)
        # INTERNALDATE only matters without a Date: (RFC 5256 2.2), and costs a call.
        arrival = row.internaldate.timestamp() if k[7] is None else 0.0
        out.append(new(Item, (u if uid else i + 1, i + 1, arrival, row.size, k)))
    return out


# The SortKeys field of each SORT key read from the store.
_FIELD = {
    "CC": "cc",
    "FROM": "from_",
    "SUBJECT": "subject",
    "TO": "to",
    "DISPLAYFROM": "display_from",
    "DISPLAYTO": "display_to",
    "DATE": "sent",
}


def sort_order(s: ImapSession, hits: Sequence[int], criteria: Sequence[SortCriterion]) -> list[int]:
    """`hits` (ascending indexes into the selected folder) in SORT order: one column of
    plain values per criterion, sorted in C (see sortthread.sort_positions)."""
    sel = s.sel
    rows = sel.rows
    cache_key = (s.store.name, sel.name, sel.uidvalidity, "SORT", tuple(criteria))
    basis = tuple(rows[i].uid for i in hits)
    cached = RESULTS.get(cache_key, basis)
    if cached is not None:
        return [hits[p] for p in cached]  # type: ignore[attr-defined]
    with _gc_paused():
        positions = _sort_positions(s, hits, criteria)
    RESULTS.put(cache_key, basis, positions)
    return [hits[p] for p in positions]


def _sort_positions(
    s: ImapSession, hits: Sequence[int], criteria: Sequence[SortCriterion]
) -> list[int]:
    rows = s.sel.rows
    fields = list(dict.fromkeys(_FIELD[c.key] for c in criteria if c.key in _FIELD))
    loaded = dict(zip(fields, _columns(s, hits, fields), strict=True)) if fields else {}
    columns: list[tuple[Sequence[object], bool]] = []
    for crit in criteria:
        name = crit.key
        if name == "ARRIVAL":
            values: Sequence[object] = [rows[i].internaldate.timestamp() for i in hits]
        elif name == "SIZE":
            values = [rows[i].size for i in hits]
        elif name == "DATE":  # RFC 5256 2.2: INTERNALDATE when there is no usable Date:
            values = [
                rows[i].internaldate.timestamp() if d is None else d
                for i, d in zip(hits, loaded["sent"], strict=True)
            ]
        else:
            values = loaded[_FIELD[name]]
        columns.append((values, crit.reverse))
    return sort_positions(columns)


@command(rq.Sort, states=SELECTED)
def sort(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Sort = cmd.args  # type: ignore[assignment]
    with_modseq = q.uses_modseq(args.key)
    hits = searched(s, args.key)
    sel = s.sel
    ordered = sort_order(s, hits, args.criteria)
    rows = sel.rows
    values = [rows[i].uid for i in ordered] if args.uid else [i + 1 for i in ordered]
    top_modseq = max((rows[i].modseq for i in ordered), default=0) if with_modseq else 0
    opts = args.return_opts
    if opts is None:
        line = b"SORT" + b"".join(b" %d" % v for v in values)
        if with_modseq and values:
            line += b" (MODSEQ %d)" % top_modseq
        s.untagged(line)
        return None
    if "SAVE" in opts:
        # SEARCHRES (RFC 5182): `$` is a set, so the order is dropped; with only MIN
        # and/or MAX, just those messages are saved, as for SEARCH.
        saved = [rows[i].uid for i in ordered]
        if saved and opts & {"MIN", "MAX"} and not opts & {"ALL", "COUNT", "PARTIAL"}:
            saved = ([saved[0]] if "MIN" in opts else []) + ([saved[-1]] if "MAX" in opts else [])
        s.saved = sorted(set(saved))
        opts = opts - {"SAVE"}
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
    if args.return_opts != {"SAVE"}:  # SAVE alone answers nothing (RFC 5182 2.1)
        s.untagged(b" ".join(line))
    if "UPDATE" in opts:
        register(
            s, Context(cmd.tag, args.key, args.uid, args.criteria, [rows[i].uid for i in ordered])
        )
    return None


@command(rq.Thread, states=SELECTED)
def thread(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Thread = cmd.args  # type: ignore[assignment]
    hits = searched(s, args.key)
    sel = s.sel
    rows = sel.rows
    # The answer shows sequence numbers or UIDs: valid while both are the same.
    basis = tuple(rows[i].uid for i in hits) + ((-1,) if args.uid else tuple(hits))
    cache_key = (s.store.name, sel.name, sel.uidvalidity, "THREAD", args.algorithm, args.uid)
    data = RESULTS.get(cache_key, basis)
    if data is None:
        with _gc_paused():
            roots = THREADERS[args.algorithm](items_for(s, hits, args.uid))
            data = format_threads(roots)
            del roots  # freed now (the trees hold no cycles), not left to the collector
        RESULTS.put(cache_key, basis, data)
    s.untagged(b"THREAD " + data if data else b"THREAD")  # type: ignore[operator]
    return None
