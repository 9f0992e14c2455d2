"""COPY, MOVE (RFC 6851) and their UID forms, with COPYUID (RFC 4315)."""

from __future__ import annotations

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.commands.quota import check_room
from server.backend.imap.session import ImapSession, No, tagged
from server.protocols.imap import requests as rq
from server.protocols.imap.seqset import format_seqset
from server.store import api


def _copyuid(result: api.CopyResult) -> str:
    src = format_seqset((a for a, _ in result.mapping), sort=False)
    dst = format_seqset((b for _, b in result.mapping), sort=False)
    return f"COPYUID {result.uidvalidity} {src} {dst}"


@command(rq.Copy, rq.Move, states=SELECTED)
def copy_or_move(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args = cmd.args
    assert isinstance(args, (rq.Copy, rq.Move))
    moving = isinstance(args, rq.Move)
    sel = s.sel
    if moving and sel.readonly:
        raise No("Mailbox is read-only")
    if s.dirty:
        s.sync(allow_expunge=moving)
    idx = s.resolve(args.seqset, args.uid)
    uids = [sel.rows[i].uid for i in idx if sel.rows[i].uid not in sel.pending_vanished]
    if not uids:
        return None
    if not moving:  # a copy adds its messages' octets to the mailbox (RFC 9208 4.3)
        check_room(
            s, sum(sel.rows[i].size for i in idx if sel.rows[i].uid not in sel.pending_vanished)
        )
    try:
        result = (s.store.move if moving else s.store.copy)(sel.name, uids, args.mailbox)
    except api.NoSuchFolder:
        raise No("Mailbox doesn't exist", "TRYCREATE") from None
    if not result.mapping:
        return None
    if not moving:
        if args.mailbox == sel.name:
            s.sync(allow_expunge=False)
        return tagged(cmd.tag, b"OK", f"{cmd.name} completed", _copyuid(result))
    s.untagged(b"OK [" + _copyuid(result).encode() + b"] Moved")
    s.report_expunged({a for a, _ in result.mapping})
    s.sync(allow_expunge=True)
    return None
