"""EXPUNGE and UID EXPUNGE (RFC 4315)."""

from __future__ import annotations

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.session import ImapSession, No
from server.protocols.imap import requests as rq


@command(rq.Expunge, states=SELECTED)
def expunge(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Expunge = cmd.args  # type: ignore[assignment]
    sel = s.sel
    if sel.readonly:
        raise No("Mailbox is read-only")
    uids = None
    if args.seqset is not None:
        uids = [sel.rows[i].uid for i in s.resolve(args.seqset, uid=True)]
        if not uids:
            s.sync(allow_expunge=True)
            return None
    gone = s.store.expunge(sel.name, uids)
    s.report_expunged(set(gone) | sel.pending_vanished)
    s.sync(allow_expunge=True)
    return None
