"""COMPRESS=DEFLATE (RFC 4978) on a client connection the back end serves directly (a
front end handed it off, server/backend/handoff.py): the streams the session reads and
writes, passed through the front end's own COMPRESS code (server/frontend/imap_compress.py),
so a handed-off session offers and does exactly what a relayed one does."""

from __future__ import annotations

import asyncio
from typing import Any

from server.frontend.imap_compress import CompressError, ImapCompress


class CompressingReader:
    """read() gives what the client sent, inflated once COMPRESS is active."""

    def __init__(self, reader: asyncio.StreamReader, compress: ImapCompress) -> None:
        self._reader, self._compress = reader, compress

    async def read(self, n: int = -1) -> bytes:
        while True:
            data = await self._reader.read(n)
            if not data:
                return b""
            try:
                out = self._compress.from_client(data)
            except CompressError as exc:
                raise ConnectionResetError(str(exc)) from None
            if out:
                return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class CompressingWriter:
    """write() sends what the session answers, deflated once COMPRESS is active."""

    def __init__(self, writer: asyncio.StreamWriter, compress: ImapCompress) -> None:
        self._writer, self._compress = writer, compress

    def write(self, data: bytes) -> None:
        if data:
            self._writer.write(self._compress.from_backend(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)
