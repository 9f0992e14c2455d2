"""STORE and UID STORE, with UNCHANGEDSINCE (RFC 7162 3.1.3)."""

from __future__ import annotations

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.session import ImapSession, No, tagged
from server.protocols.imap import requests as rq
from server.protocols.imap.seqset import format_seqset

_OPS = {"": "=", "+": "+", "-": "-"}


@command(rq.Store, states=SELECTED)
def store(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Store = cmd.args  # type: ignore[assignment]
    sel = s.sel
    if sel.readonly:
        raise No("Mailbox is read-only")
    if args.unchangedsince is not None:
        s.enable_condstore()
    if s.dirty:
        s.sync(allow_expunge=False)
    idx = [
        i for i in s.resolve(args.seqset, args.uid) if sel.rows[i].uid not in sel.pending_vanished
    ]
    flags = [f for f in args.flags if f != "\\Recent"]  # \Recent is the server's (RFC 3501 2.3.2)
    result = s.store.set_flags(
        sel.name, [sel.rows[i].uid for i in idx], _OPS[args.mode], flags, args.unchangedsince
    )
    s.announce_keywords(result.changed)
    changed = set()
    for row in result.changed:
        j = sel.index_of(row.uid)
        if j >= 0:
            sel.rows[j] = row
            changed.add(row.uid)
    failed = set(result.failed)
    for i in idx:
        row = sel.rows[i]
        if row.uid in failed:
            continue
        if not args.silent:
            s.untagged(s.flags_fetch(i, row, with_uid=args.uid))
        elif s.condstore and row.uid in changed:
            # The client learns each new MODSEQ even with .SILENT (RFC 7162 3.1.3 example 3).
            uid = b"UID %d " % row.uid if args.uid or s.qresync else b""
            s.untagged(b"%d FETCH (%sMODSEQ (%d))" % (i + 1, uid, row.modseq))
    if failed:
        if args.uid:
            ids = sorted(failed)
        else:
            ids = [sel.index_of(u) + 1 for u in failed]
        return tagged(cmd.tag, b"OK", "Conditional STORE failed", "MODIFIED " + format_seqset(ids))
    return None
