"""IDLE (RFC 2177): the session waits in line mode for DONE; the I/O layer pushes
changes (server/backend/imap/fanout.py) and keep-alives meanwhile."""

from __future__ import annotations

from server.backend.imap.commands import AUTH, command
from server.backend.imap.session import ImapSession, SelectedGone, tagged
from server.protocols.imap import requests as rq
from server.store import api


@command(rq.Idle, states=AUTH)
def idle(s: ImapSession, cmd: rq.Command) -> bytes | None:
    if s.selected is not None:
        s.sync(allow_expunge=True)
    s.idling = True
    s.idle_tag = cmd.tag
    s.reader.line_mode = True
    s.out.append(b"+ idling\r\n")
    return b""


def end_idle(s: ImapSession, line: bytes) -> bytes:
    s.reader.line_mode = False
    s.idling = False
    tag, s.idle_tag = s.idle_tag or "*", None
    if line.strip().upper() != b"DONE":
        return tagged(tag, b"BAD", "Expected DONE")
    s.out = []
    if s.selected is not None:
        try:
            s.sync(allow_expunge=True)
        except SelectedGone:
            out, s.out = s.out, []
            return b"".join(out) + s.selected_gone()
        except api.StoreError:
            pass
    out, s.out = s.out, []
    return b"".join(out) + tagged(tag, b"OK", "IDLE terminated")
