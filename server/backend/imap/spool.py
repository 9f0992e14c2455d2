"""Streaming APPEND literals into the store (the reader's Spool, reader.CommandReader).

A literal announced for APPEND message data goes, as it arrives, into the store's
BodyWriter: for the SQLite store that is the file that becomes the message's body, so a
20 MB APPEND never sits in the session's memory. Bare LF line ends are turned into CRLF
on the way (messages are stored with CRLF); literal8 data (RFC 3516) is kept byte for
byte.
"""

from __future__ import annotations

import re

from server.protocols.imap import requests as rq
from server.store import api

_BARE_LF = re.compile(rb"(?<!\r)\n")


def crlf(data: bytes) -> bytes:
    """Messages are stored with CRLF line ends; some clients APPEND bare LF."""
    # Two counts in C find the usual case (no bare LF) several times faster than the
    # look-behind search does.
    lf = data.count(b"\n")
    if not lf or lf == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


class BodySpool(rq.Spool):
    """One streamed literal: `writer` holds the bytes written so far. A write that fails
    (a full disk) does not end the connection: the rest of the literal is read and
    dropped, and the command is answered NO (`failed` says why)."""

    __slots__ = ("writer", "convert", "has_nul", "failed", "_last_cr")

    def __init__(
        self, writer: api.BodyWriter | None, binary: bool, failed: str | None = None
    ) -> None:
        self.writer = writer if writer is not None else api.BodyWriter()
        self.convert = not binary
        self.has_nul = False
        self.failed = failed
        self._last_cr = False

    @classmethod
    def open(cls, store: api.MailboxStore, binary: bool) -> BodySpool:
        try:
            return cls(store.new_body(), binary)
        except (OSError, api.StoreError) as exc:
            return cls(None, binary, str(exc) or type(exc).__name__)

    def write(self, data: bytes | bytearray) -> None:
        if not data or self.failed is not None:
            return
        try:
            self._write(data)
        except (OSError, api.StoreError) as exc:
            self.failed = str(exc) or type(exc).__name__
            self.writer.discard()

    def _write(self, data: bytes | bytearray) -> None:
        chunk = bytes(data)
        if not self.has_nul and b"\x00" in chunk:
            self.has_nul = True
        if self.convert and b"\n" in chunk:
            out = _BARE_LF.sub(b"\r\n", chunk)
            if self._last_cr and chunk[0] == 0x0A:
                out = out[1:]  # this LF ends the CR that closed the previous piece
            self._last_cr = chunk[-1] == 0x0D
            chunk = out
        else:
            self._last_cr = chunk[-1] == 0x0D
        self.writer.write(chunk)

    def discard(self) -> None:
        self.writer.discard()
