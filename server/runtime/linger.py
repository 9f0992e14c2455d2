"""Closing on a client after the server's last words, without losing them.

A server that closes a TCP connection while bytes the client sent are still unread in its
receive buffer makes the kernel answer with RST instead of FIN, and a client that gets the
RST before it has read the last words (IMAP `* BYE [TOOBIG]`, POP3 `-ERR`) loses them: its
next read fails with ECONNRESET. So: flush, shut the write side (FIN after the last
words), read and drop what the client still sends for a short bounded time, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def linger_close(
    writer: asyncio.StreamWriter,
    reader: _Reader | None,
    seconds: float = LINGER_SECONDS,
    limit: int = LINGER_BYTES,
) -> None:
    """Flush, send FIN where the transport can (plain TCP; TLS cannot half-close), drop
    client input until it closes, `seconds` pass or `limit` bytes came, then close."""
    try:
        async with asyncio.timeout(seconds):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            if reader is not None:
                taken = 0
                while taken < limit:
                    data = await reader.read(65536)
                    if not data:
                        break
                    taken += len(data)
    except (TimeoutError, OSError, ssl.SSLError, RuntimeError, ValueError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "linger_close"]
