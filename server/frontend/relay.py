"""Byte relay between a client and a back end after the hand-over.

The two transports are re-wired to a pair of small protocols: whatever one side's transport
delivers goes straight into the other side's transport.write(), so the only per-chunk work is
the callback itself (no StreamReader buffer copies, no coroutine wake-ups). Flow control is the
transports' own: when one side's write buffer passes its high-water mark, reading from the
other side pauses until it drains. When either side closes, the other is closed after its
pending writes are flushed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes the StreamReader has received but nobody has read yet, without waiting.

    asyncio offers no public way to look at this buffer; it is needed twice: to drop what a
    client pipelined behind STARTTLS, and to hand over what was read ahead before the relay
    takes the transport away from the StreamReader.
    """
    buffer: bytearray | None = getattr(reader, "_buffer", None)
    if not buffer:
        return b""
    data = bytes(buffer)
    buffer.clear()
    return data


@dataclass
class Transforms:
    """Rewrites of the relayed bytes (IMAP COMPRESS): each takes what one side sent and
    returns what the other side gets; `last_words` turns the front end's own last words to
    the client into wire form. A transform that raises ends the relay."""

    to_backend: Callable[[bytes], bytes]
    to_client: Callable[[bytes], bytes]
    last_words: Callable[[bytes], bytes]


@dataclass
class RelayStats:
    """Bytes relayed each way (for the protocol log's proxy line)."""

    to_backend: int = 0
    to_client: int = 0


class _Pump(asyncio.Protocol):
    def __init__(self, src: asyncio.BaseTransport, done: asyncio.Future[str]) -> None:
        self.src = src
        self.dst: asyncio.Transport | None = None
        self.done = done
        self.name = ""
        self.last = b""  # last chunk seen, for the "did it say goodbye?" check
        self.relayed = 0
        self.transform: Callable[[bytes], bytes] | None = None

    def data_received(self, data: bytes) -> None:
        self.last = data
        self.relayed += len(data)
        assert self.dst is not None
        if self.transform is not None:
            try:
                data = self.transform(data)
            except Exception:
                self.src.close()
                self.dst.close()
                self._finish()
                return
        self.dst.write(data)

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        # Our own transport cannot take more: stop reading from the side that feeds it.
        if self.dst is not None and not self.dst.is_closing():
            self.dst.pause_reading()

    def resume_writing(self) -> None:
        if self.dst is not None and not self.dst.is_closing():
            self.dst.resume_reading()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.name)


async def relay(
    client: asyncio.StreamWriter,
    client_pending: bytes,
    backend: asyncio.StreamWriter,
    backend_pending: bytes,
    backend_lost: Callable[[bytes], bytes] | None = None,
    stats: RelayStats | None = None,
    transforms: Transforms | None = None,
) -> str:
    """Relay until one side closes; returns "client" or "backend" (who closed first).

    `client_pending` / `backend_pending` are bytes already read from each side that the
    other must get first. When the back end closes first, `backend_lost(last_chunk)` may
    give final words for the client (IMAP's "* BYE" when the back end did not say it).
    `stats`, when given, gets the bytes relayed each way (pending bytes included).
    `transforms`, when given, rewrite the bytes each way (pending bytes included).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    ct: asyncio.Transport = client.transport  # type: ignore[assignment]
    bt: asyncio.Transport = backend.transport  # type: ignore[assignment]
    to_backend, to_client = _Pump(ct, done), _Pump(bt, done)
    to_backend.name, to_client.name = "client", "backend"
    to_backend.dst, to_client.dst = bt, ct
    if transforms is not None:
        to_backend.transform, to_client.transform = transforms.to_backend, transforms.to_client
        try:
            backend_pending = transforms.to_client(backend_pending)
            client_pending = transforms.to_backend(client_pending)
        except Exception:
            ct.close()
            bt.close()
            return "client"
    if backend_pending:
        ct.write(backend_pending)
    if client_pending:
        bt.write(client_pending)
    if ct.is_closing() or bt.is_closing():
        done.set_result("client" if ct.is_closing() else "backend")
    ct.set_protocol(to_backend)
    bt.set_protocol(to_client)
    # The StreamReaders may have paused reading when their buffers filled; we take over.
    for transport in (ct, bt):
        if not transport.is_closing():
            transport.resume_reading()
    try:
        closed_first = await done
    finally:
        if not ct.is_closing() and done.done() and done.result() == "backend" and backend_lost:
            words = backend_lost(to_client.last)
            if words:
                ct.write(transforms.last_words(words) if transforms is not None else words)
        ct.close()
        bt.close()
        if stats is not None:
            stats.to_backend = len(client_pending) + to_backend.relayed
            stats.to_client = len(backend_pending) + to_client.relayed
    return closed_first
