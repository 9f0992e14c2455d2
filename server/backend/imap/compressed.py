"""COMPRESS=DEFLATE (RFC 4978) on a client connection the back end serves directly (a
front end handed its socket over, server/backend/handoff.py, and left the data path).

The session answers the command itself (server/backend/imap/commands/compress.py) and from
then on inflates what it receives (ImapSession.receive); the connection's writer is
swapped for a DeflatingWriter right after the tagged OK has gone out in the clear, so every
later write - answers, IDLE pushes, keep-alives, the BYE - is deflated. Until a client
asks, nothing of this is in the data path: an uncompressed session pays nothing for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.protocols.imap.compress import Deflate


class DeflatingWriter:
    """The connection's StreamWriter once COMPRESS is active: each write goes out
    deflated and sync-flushed (the client can act on every response); the rest of the
    StreamWriter (drain, close, transport, ...) is the wrapped one's."""

    __slots__ = ("_writer", "_deflate")

    def __init__(self, writer: asyncio.StreamWriter, deflate: Deflate) -> None:
        self._writer, self._deflate = writer, deflate

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._writer.write(self._deflate.deflate(bytes(data)))

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


__all__ = ["DeflatingWriter"]
