"""Search and sort contexts (RFC 5267 section 4): SEARCH/SORT RETURN (UPDATE ...) keeps
the result live while the mailbox stays selected, and the session reports each change as
an untagged ESEARCH ADDTO/REMOVEFROM; CANCELUPDATE ends that.

The session calls `emit_updates()` after every command and IDLE push while a context is
active. It evaluates each context again over the selected folder and reports the
difference: results that left because their message was expunged are reported with the
sequence numbers they had, before the EXPUNGE responses (RFC 5267 4.3.4), everything
else after them, with current numbers.
"""

from __future__ import annotations

import re

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.commands.searching import Context, contexts_of, matching
from server.backend.imap.commands.sortthread import sort_order
from server.backend.imap.session import Bad, ImapSession
from server.protocols.imap import requests as rq
from server.protocols.imap.seqset import format_seqset
from server.protocols.imap.wire import encode_string

_EXPUNGE_LINE = re.compile(rb"\* (?:\d+ EXPUNGE|VANISHED)")


@command(rq.CancelUpdate, states=SELECTED, blocking=False)
def cancelupdate(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.CancelUpdate = cmd.args  # type: ignore[assignment]
    contexts = contexts_of(s)
    unknown = [t for t in args.tags if t not in contexts]
    if unknown:
        raise Bad(f"No live search with tag {unknown[0]}")
    for tag in args.tags:
        contexts.pop(tag, None)
    return None


def _evaluate(s: ImapSession, ctx: Context) -> list[int]:
    rows = s.sel.rows
    hits = matching(s, ctx.key)
    if ctx.criteria is not None:
        hits = sort_order(s, hits, ctx.criteria)
    return [rows[i].uid for i in hits]


def _line(ctx: Context, item: bytes, pairs: list[tuple[int, list[int]]]) -> bytes:
    head = b"ESEARCH (TAG " + encode_string(ctx.tag) + b")" + (b" UID" if ctx.uid else b"")
    body = b" ".join(b"%d %s" % (pos, format_seqset(nums).encode()) for pos, nums in pairs)
    return head + b" " + item + b" (" + body + b")"


def emit_updates(s: ImapSession) -> None:
    """Queue the ADDTO/REMOVEFROM responses for what changed since the last call."""
    contexts = contexts_of(s)
    sel = s.selected
    for tag in [t for t, c in contexts.items() if sel is None or c.selected is not sel]:
        del contexts[tag]  # the mailbox was closed or selected again: contexts end
    if sel is None or not contexts:
        return
    current = sel.uids
    old_view: list[int] = s.context_view  # type: ignore[assignment]
    present = set(current)
    old_seq = {u: i + 1 for i, u in enumerate(old_view) if u not in present}
    new_seq: dict[int, int] | None = None
    before: list[bytes] = []
    after: list[bytes] = []
    for ctx in contexts.values():
        new = _evaluate(s, ctx)
        new_set = set(new)
        old_set = set(ctx.result)
        removed = [u for u in ctx.result if u not in new_set]
        added = [u for u in new if u not in old_set]
        if not removed and not added:
            continue
        if new_seq is None:
            new_seq = {u: i + 1 for i, u in enumerate(current)}
        gone = [u for u in removed if u in old_seq]
        still = [u for u in removed if u not in old_seq]
        if ctx.criteria is None:
            if gone:
                nums = gone if ctx.uid else [old_seq[u] for u in gone]
                before.append(_line(ctx, b"REMOVEFROM", [(0, sorted(nums))]))
            if still:
                nums = still if ctx.uid else [new_seq[u] for u in still]  # type: ignore[index]
                after.append(_line(ctx, b"REMOVEFROM", [(0, sorted(nums))]))
            if added:
                nums = added if ctx.uid else [new_seq[u] for u in added]  # type: ignore[index]
                after.append(_line(ctx, b"ADDTO", [(0, sorted(nums))]))
        else:
            # Positions apply one pair after the other, and the REMOVEFROM lines one
            # after the other: removals go from the highest position down, additions to
            # their final positions going up.
            work = ctx.result
            for part, out in ((gone, before), (still, after)):
                if part:
                    position = {u: i + 1 for i, u in enumerate(work)}
                    pairs = [
                        (position[u], [u if ctx.uid else (old_seq.get(u) or new_seq[u])])
                        for u in sorted(part, key=lambda u: -position[u])
                    ]
                    out.append(_line(ctx, b"REMOVEFROM", pairs))
                    dropped = set(part)
                    work = [u for u in work if u not in dropped]
            if added:
                final = {u: i + 1 for i, u in enumerate(new)}
                pairs = [
                    (final[u], [u if ctx.uid else new_seq[u]])  # type: ignore[index]
                    for u in sorted(added, key=lambda u: final[u])
                ]
                after.append(_line(ctx, b"ADDTO", pairs))
        ctx.result = new
    s.context_view = list(current)
    out = s.out
    if before:
        at = next((i for i, chunk in enumerate(out) if _EXPUNGE_LINE.match(chunk)), len(out))
        out[at:at] = [b"* " + line + b"\r\n" for line in before]
    out.extend(b"* " + line + b"\r\n" for line in after)
