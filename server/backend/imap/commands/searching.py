"""SEARCH and UID SEARCH: evaluate the parser's criteria tree (search.py) per message,
with ESEARCH (RFC 4731) results, SEARCHRES `$` (RFC 5182) and MODSEQ (RFC 7162)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.commands.fetch import Message
from server.backend.imap.session import ImapSession, No, Selected
from server.mail import mime
from server.protocols.imap import requests as rq
from server.protocols.imap import search as q
from server.protocols.imap.seqset import format_seqset
from server.protocols.imap.sortthread import SortCriterion
from server.protocols.imap.wire import encode_string
from server.store import api

Pred = Callable[[int, api.MessageRow, Message], bool]

_INFO_HEADERS = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject"}


def matching(s: ImapSession, key: q.SearchKey) -> list[int]:
    """Indexes into the selected folder of the messages matching `key` (SEARCH, SORT, THREAD
    and their contexts). A message the store cannot read any more matches nothing."""
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


def searched(s: ImapSession, key: q.SearchKey) -> list[int]:
    """matching() for a command that searches (SEARCH, SORT, THREAD): a MODSEQ criterion
    turns CONDSTORE on (RFC 7162 3.1), and pending changes are taken in first, without
    expunges, which a search may not report."""
    if q.uses_modseq(key):
        s.enable_condstore()
    if s.dirty:
        s.sync(allow_expunge=False)
    return matching(s, key)


def compile_key(s: ImapSession, key: q.SearchKey) -> Pred:
    sel = s.sel
    if isinstance(key, q.AllKey):
        return lambda i, row, m: True
    if isinstance(key, q.FlagKey):
        flag, present = key.flag, key.present
        if flag == "\\Recent":
            recent = sel.recent
            return lambda i, row, m: (row.uid in recent) == present
        if flag.startswith("\\"):
            return lambda i, row, m: (flag in row.flags) == present
        low = flag.lower()
        return lambda i, row, m: any(f.lower() == low for f in row.flags) == present
    if isinstance(key, q.SeqKey):
        if key.seqset.saved:
            saved = set(s.saved or ())
            return lambda i, row, m: row.uid in saved
        if key.uid:
            top = sel.uids[-1] if sel.uids else 0
            uids = key.seqset.resolve(top)
            return lambda i, row, m: row.uid in uids
        seqs = key.seqset.resolve(sel.exists)
        return lambda i, row, m: (i + 1) in seqs
    if isinstance(key, q.HeaderKey):
        return _header(key)
    if isinstance(key, q.BodyKey):
        value = key.value
        return lambda i, row, m: mime.text_contains(m.raw, value, headers=False, info=m.info)
    if isinstance(key, q.TextKey):
        value = key.value
        return lambda i, row, m: mime.text_contains(m.raw, value, headers=True, info=m.info)
    if isinstance(key, q.DateKey):
        return _date(key)
    if isinstance(key, q.SizeKey):
        size = key.size
        if key.op == "larger":
            return lambda i, row, m: row.size > size
        return lambda i, row, m: row.size < size
    if isinstance(key, q.ModSeqKey):
        modseq = key.modseq
        return lambda i, row, m: row.modseq >= modseq
    if isinstance(key, q.AgeKey):
        seconds = key.seconds
        now = datetime.now(UTC)
        if key.op == "older":
            return lambda i, row, m: (now - row.internaldate).total_seconds() > seconds
        return lambda i, row, m: (now - row.internaldate).total_seconds() <= seconds
    if isinstance(key, q.NotKey):
        inner = compile_key(s, key.key)
        return lambda i, row, m: not inner(i, row, m)
    if isinstance(key, q.OrKey):
        left, right = compile_key(s, key.left), compile_key(s, key.right)
        return lambda i, row, m: left(i, row, m) or right(i, row, m)
    if isinstance(key, q.AndKey):
        # Cheap keys first: flags and numbers before anything that reads the message.
        preds = [compile_key(s, k) for k in sorted(key.keys, key=_cost)]
        return lambda i, row, m: all(pr(i, row, m) for pr in preds)
    raise No(f"Unsupported search key {type(key).__name__}")


def _cost(key: q.SearchKey) -> int:
    if isinstance(key, (q.BodyKey, q.TextKey)):
        return 3
    if isinstance(key, q.HeaderKey) or (isinstance(key, q.DateKey) and key.which == "sent"):
        return 2
    if isinstance(key, (q.NotKey, q.OrKey, q.AndKey)):
        return 1
    return 0


def _header(key: q.HeaderKey) -> Pred:
    field = key.field.lower()
    value = key.value.casefold()
    attr = _INFO_HEADERS.get(field)
    if attr is not None and value:
        return lambda i, row, m: value in getattr(m.info, attr).casefold()

    def match(i: int, row: api.MessageRow, m: Message) -> bool:
        values = mime.header_values(m.raw, key.field, m.info)
        return any(value in v.casefold() for v in values) if value else bool(values)

    return match


def _date(key: q.DateKey) -> Pred:
    day = key.date
    op = key.op

    def test(d: object) -> bool:
        if d is None:
            return False
        if op == "before":
            return d < day  # type: ignore[operator]
        if op == "on":
            return d == day
        return d >= day  # type: ignore[operator]

    if key.which == "internal":
        return lambda i, row, m: test(row.internaldate.date())

    def sent(i: int, row: api.MessageRow, m: Message) -> bool:
        d = m.info.date_sent
        return test(d.date() if d is not None else None)

    return sent


@command(rq.Search, states=SELECTED)
def search(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Search = cmd.args  # type: ignore[assignment]
    with_modseq = q.uses_modseq(args.key)
    hits = searched(s, args.key)
    sel = s.sel
    values = [sel.rows[i].uid for i in hits] if args.uid else [i + 1 for i in hits]
    top_modseq = max((sel.rows[i].modseq for i in hits), default=0)
    opts = args.return_opts
    if opts is None and s.rev2:
        opts = frozenset({"ALL"})  # IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 7.3.4)
    if opts is None:
        line = b"SEARCH" + b"".join(b" %d" % v for v in values)
        if with_modseq and values:
            line += b" (MODSEQ %d)" % top_modseq
        s.untagged(line)
        return None
    _esearch(s, cmd.tag, args, opts or frozenset({"ALL"}), hits, values, with_modseq, top_modseq)
    if "UPDATE" in opts:
        register(s, Context(cmd.tag, args.key, args.uid, None, [sel.rows[i].uid for i in hits]))
    return None


def _esearch(
    s: ImapSession,
    tag: str,
    args: rq.Search,
    opts: frozenset[str],
    hits: list[int],
    values: list[int],
    with_modseq: bool,
    top_modseq: int,
) -> None:
    sel = s.sel
    if "SAVE" in opts:
        uids = [sel.rows[i].uid for i in hits]
        if uids and opts & {"MIN", "MAX"} and not opts & {"ALL", "COUNT"}:
            keep = []
            if "MIN" in opts:
                keep.append(uids[0])
            if "MAX" in opts:
                keep.append(uids[-1])
            uids = sorted(set(keep))
        s.saved = uids
        opts = opts - {"SAVE"}
        if not opts:
            return
    line = [b"ESEARCH (TAG " + encode_string(tag) + b")"]
    if args.uid:
        line.append(b"UID")
    if values:
        if "MIN" in opts:
            line.append(b"MIN %d" % values[0])
        if "MAX" in opts:
            line.append(b"MAX %d" % values[-1])
        if "ALL" in opts:
            line.append(b"ALL " + format_seqset(values).encode())
    if "COUNT" in opts:
        line.append(b"COUNT %d" % len(values))
    if "PARTIAL" in opts and args.partial is not None:
        line.append(partial_item(values, args.partial, ordered=False))
    if with_modseq and values:
        if opts & {"MIN", "MAX"} and not opts & {"ALL", "COUNT"}:
            # Only the messages MIN and MAX name count (RFC 4731 section 3.2).
            named = [hits[0]] if "MIN" in opts else []
            named += [hits[-1]] if "MAX" in opts else []
            top_modseq = max(sel.rows[i].modseq for i in named)
        line.append(b"MODSEQ %d" % top_modseq)
    s.untagged(b" ".join(line))


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


# --- live results (RFC 5267 contexts; context.py keeps them up to date) ---------------

#: Live contexts per session; beyond this the server declines to keep one updated
#: (RFC 5267 4.3.1, NOUPDATE).
MAX_CONTEXTS = 16


@dataclass
class Context:
    tag: str
    key: q.SearchKey
    uid: bool
    criteria: tuple[SortCriterion, ...] | None  # None: a SEARCH context (unordered)
    result: list[int]  # UIDs: ascending for SEARCH, in sort order for SORT
    selected: Selected | None = field(default=None, repr=False)


def contexts_of(s: ImapSession) -> dict[str, Context]:
    return s.contexts  # type: ignore[return-value]


def register(s: ImapSession, ctx: Context) -> None:
    """Keep `ctx` updated from now on (the command has just sent its initial result)."""
    contexts = contexts_of(s)
    ctx.selected = s.selected
    if ctx.tag not in contexts and len(contexts) >= MAX_CONTEXTS:
        s.untagged(b"NO [NOUPDATE " + encode_string(ctx.tag) + b"] Too many live searches")
        return
    if not any(c.selected is s.selected for c in contexts.values()):
        s.context_view = list(s.sel.uids)
    contexts[ctx.tag] = ctx
