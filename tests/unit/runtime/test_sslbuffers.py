"""Shared TLS receive buffers (server.runtime.sslbuffers): data integrity under concurrency on
two event loops in two threads, STARTTLS, and the refusal paths that keep asyncio untouched."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import threading
from asyncio import sslproto
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
import trustme

from server.runtime import sslbuffers

CONNECTIONS_PER_LOOP = 12
PAYLOAD = 384 * 1024  # larger than the shared buffer: many receives per connection


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


@pytest.fixture
def installed() -> Iterator[None]:
    was_active = sslbuffers.active()
    assert sslbuffers.install()
    yield
    if not was_active:
        sslbuffers.uninstall()


def payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(PAYLOAD + seed * 997)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything, reading and writing at once so both directions are busy."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def exchange(
    port: int, client_ctx: ssl.SSLContext, seed: int, protocols: list[object]
) -> bool:
    """Stream a payload to an echo server while reading it back; True if intact."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    protocols.append(writer.transport._ssl_protocol)  # type: ignore[attr-defined]
    data = payload(seed)

    async def send() -> None:
        view = memoryview(data)
        for offset in range(0, len(data), 50_000):  # odd chunk size: records straddle reads
            writer.write(view[offset : offset + 50_000])
            await writer.drain()

    sender = asyncio.create_task(send())
    received = await reader.readexactly(len(data))
    await sender
    writer.close()
    return hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


class LoopThread:
    """An event loop running in its own thread, with an echo server on it."""

    def __init__(self, server_ctx: ssl.SSLContext) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server_protocols: list[object] = []
        self.server: asyncio.AbstractServer = self.call(self._serve(server_ctx)).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    async def _serve(self, server_ctx: ssl.SSLContext) -> asyncio.AbstractServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.server_protocols.append(writer.transport._ssl_protocol)  # type: ignore[attr-defined]
            await echo(reader, writer)

        return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)

    def call(self, coro) -> Future:  # noqa: ANN001 - any coroutine
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_install_is_idempotent_and_replaces_the_class(installed: None) -> None:
    assert sslbuffers.install()
    assert sslproto.SSLProtocol is sslbuffers.SharedBufferSSLProtocol


def test_large_transfers_both_ways_on_two_loops_in_two_threads(
    installed: None,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    a, b = LoopThread(server_ctx), LoopThread(server_ctx)
    try:
        # Each loop's clients talk to the other loop's server: every thread holds client and
        # server ends of many connections, all receiving at the same time.
        client_protocols: dict[int, list[object]] = {0: [], 1: []}

        async def clients(port: int, first_seed: int, index: int) -> list[bool]:
            return await asyncio.gather(
                *(
                    exchange(port, client_ctx, first_seed + n, client_protocols[index])
                    for n in range(CONNECTIONS_PER_LOOP)
                )
            )

        on_a = a.call(clients(b.port, 0, 0))
        on_b = b.call(clients(a.port, 100, 1))
        assert on_a.result(60) == [True] * CONNECTIONS_PER_LOOP
        assert on_b.result(60) == [True] * CONNECTIONS_PER_LOOP
    finally:
        a.close()
        b.close()
    # The patch really was in the path: one buffer per thread, shared by both ends.
    thread_a = {id(p._ssl_buffer) for p in client_protocols[0] + a.server_protocols}  # type: ignore[attr-defined]
    thread_b = {id(p._ssl_buffer) for p in client_protocols[1] + b.server_protocols}  # type: ignore[attr-defined]
    assert all(
        isinstance(p, sslbuffers.SharedBufferSSLProtocol)
        for p in client_protocols[0] + client_protocols[1]
    )
    assert len(thread_a) == 1 and len(thread_b) == 1 and thread_a != thread_b


def test_starttls_upgrade_uses_shared_buffers_and_keeps_data_intact(
    installed: None,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    data = payload(7)

    async def main() -> tuple[bytes, object, object]:
        server_side: list[object] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"OK begin TLS\r\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            server_side.append(writer.transport._ssl_protocol)  # type: ignore[attr-defined]
            await echo(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\r\n")
            assert await reader.readline() == b"OK begin TLS\r\n"
            await writer.start_tls(client_ctx, server_hostname="localhost")
            writer.write(data)
            echoed = await reader.readexactly(len(data))
            client_protocol = writer.transport._ssl_protocol  # type: ignore[attr-defined]
            writer.close()
            return echoed, client_protocol, server_side[0]
        finally:
            server.close()

    echoed, client_protocol, server_protocol = asyncio.run(main())
    assert echoed == data
    assert isinstance(client_protocol, sslbuffers.SharedBufferSSLProtocol)
    assert isinstance(server_protocol, sslbuffers.SharedBufferSSLProtocol)
    assert client_protocol._ssl_buffer is server_protocol._ssl_buffer  # type: ignore[attr-defined]


def test_a_loop_other_than_the_selector_loop_gets_a_private_buffer(installed: None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    not_a_selector_loop = object()
    one = sslbuffers.SharedBufferSSLProtocol(
        not_a_selector_loop, asyncio.Protocol(), context, None, server_side=True
    )
    two = sslbuffers.SharedBufferSSLProtocol(
        not_a_selector_loop, asyncio.Protocol(), context, None, server_side=True
    )
    assert len(one.get_buffer(-1)) == sslproto.SSLProtocol.max_size
    assert one.get_buffer(-1).obj is not two.get_buffer(-1).obj


def test_an_sslprotocol_without_the_expected_shape_is_refused() -> None:
    class Changed(asyncio.BufferedProtocol):
        max_size = 256 * 1024

        def __init__(self) -> None:
            self.buffer = bytearray(self.max_size)

        def get_buffer(self, n: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            pass

    assert sslbuffers.unsupported_reason(sslbuffers._ORIGINAL) is None
    assert "__init__" in (sslbuffers.unsupported_reason(Changed) or "")


def test_install_leaves_a_foreign_replacement_alone(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Foreign(sslbuffers._ORIGINAL):  # type: ignore[misc, valid-type]
        pass

    monkeypatch.setattr(sslproto, "SSLProtocol", Foreign)
    assert not sslbuffers.install()
    assert sslproto.SSLProtocol is Foreign
    assert "not shared" in caplog.text
