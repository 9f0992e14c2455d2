"""COMPRESS (RFC 4978), on a connection the back end serves directly.

A relayed session's COMPRESS is the front end's (server/frontend/imap_compress.py takes
the command out of the stream): the back end neither offers nor does it there, as a second
compressor behind the first would only waste CPU.
"""

from __future__ import annotations

from server.backend.imap.commands import AUTH, command
from server.backend.imap.session import Bad, ImapSession, No, tagged
from server.protocols.imap import requests as rq

CAPABILITY = "COMPRESS=DEFLATE"


@command(rq.Compress, states=AUTH, blocking=False)
def compress(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Compress = cmd.args  # type: ignore[assignment]
    if not s.direct:
        raise Bad("COMPRESS is not available on this connection")
    if args.mechanism != "DEFLATE":
        raise Bad(f"Unknown compression mechanism {args.mechanism}")
    if s.compression is not None:
        raise No("DEFLATE is active already", "COMPRESSIONACTIVE")
    s.start_compression()
    return tagged(cmd.tag, b"OK", "DEFLATE active")
