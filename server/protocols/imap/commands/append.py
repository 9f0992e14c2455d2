"""APPEND (with MULTIAPPEND's several messages) and APPENDUID (RFC 4315)."""

from __future__ import annotations

import re

from server.store import api

from .. import parser as p
from ..seqset import format_seqset
from ..session import ImapSession, No, tagged
from . import AUTH, command
from .quota import check_room

_BARE_LF = re.compile(rb"(?<!\r)\n")


def crlf(data: bytes) -> bytes:
    """Messages are stored with CRLF line ends; some clients APPEND bare LF."""
    return _BARE_LF.sub(b"\r\n", data) if _BARE_LF.search(data) else data


@command(p.Append, states=AUTH)
def append(s: ImapSession, cmd: p.Command) -> bytes | None:
    args: p.Append = cmd.args  # type: ignore[assignment]
    results: list[api.AppendResult] = []
    # All of a MULTIAPPEND or none (RFC 3502): the quota is checked for the lot first.
    check_room(s, sum(len(message.data) for message in args.messages))
    for message in args.messages:
        if not message.data:
            raise No("Empty message")
        flags = [f for f in message.flags if f != "\\Recent"]
        try:
            results.append(s.store.append(args.mailbox, crlf(message.data), flags, message.date))
        except api.NoSuchFolder:
            raise No("Mailbox doesn't exist", "TRYCREATE") from None
    if s.selected is not None and s.selected.name == args.mailbox:
        s.sync(allow_expunge=True)
    uids = format_seqset((r.uid for r in results), sort=False)
    return tagged(cmd.tag, b"OK", "APPEND completed",
                  f"APPENDUID {results[0].uidvalidity} {uids}")

