"""The replication protocol between the target server's mover and the source server's
MSExchangeMailboxReplication, after the hand-over (server/protocols/handover.py, protocol
"MRS", the mailbox being moved in the LOGIN line).

Each request is one line of JSON, {"op": ..., ...}. Each answer is one line of JSON, {"ok":
true, ...} or {"ok": false, "error": text}; an answer with "octets": n is followed by n raw
bytes (the messages of a READ, one after the other, sizes in "sizes"). Requests are small
and bounded (MAX_REQUEST); answers can be large (a folder's rows) and are read by a peer
that has proved itself.

    folders                         -> {"folders": [{name, special_use, subscribed,
                                        uidvalidity, highestmodseq, messages, size}]}
    changes {folder, modseq}        -> {uidvalidity, highestmodseq, vanished,
                                        rows: [[uid, [flags], size, internaldate]]}
    read {folder, uids}             -> {sizes: [[uid, n]], octets} + the bytes
    lock {target}                   -> the fence is up and no session of the mailbox on
                                       the source can write any more: {"ended": n}
    unlock                          -> the fence is down (a move that failed before its switch)
    purge {target}                  -> the source copy is deleted; the fence says "moved"
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from server.moves.copier import SourceChanges, SourceFolder, SourceRow

PROTOCOL = "MRS"
MAX_REQUEST = 64 * 1024
MAX_UIDS_PER_READ = 256


class WireError(Exception):
    """The peer broke the protocol or answered with an error."""


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        raise WireError("not a JSON line") from None
    if not isinstance(obj, dict):
        raise WireError("not a JSON object")
    return obj


def folder_to_json(f: SourceFolder) -> dict[str, Any]:
    return {
        "name": f.name,
        "special_use": f.special_use,
        "subscribed": f.subscribed,
        "uidvalidity": f.uidvalidity,
        "highestmodseq": f.highestmodseq,
        "messages": f.messages,
        "size": f.size,
    }


def folder_from_json(d: dict[str, Any]) -> SourceFolder:
    return SourceFolder(
        str(d["name"]),
        d.get("special_use"),
        bool(d["subscribed"]),
        int(d["uidvalidity"]),
        int(d["highestmodseq"]),
        int(d["messages"]),
        int(d["size"]),
    )


def changes_to_json(c: SourceChanges) -> dict[str, Any]:
    return {
        "uidvalidity": c.uidvalidity,
        "highestmodseq": c.highestmodseq,
        "vanished": c.vanished,
        "rows": [[r.uid, list(r.flags), r.size, r.internaldate.isoformat()] for r in c.rows],
    }


def changes_from_json(d: dict[str, Any]) -> SourceChanges:
    return SourceChanges(
        int(d["uidvalidity"]),
        int(d["highestmodseq"]),
        [
            SourceRow(
                int(uid), tuple(str(f) for f in flags), int(size), datetime.fromisoformat(when)
            )
            for uid, flags, size, when in d["rows"]
        ],
        [int(u) for u in d["vanished"]],
    )
