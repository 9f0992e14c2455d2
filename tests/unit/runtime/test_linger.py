"""linger_close: the client reads the server's last words even when it had sent bytes the
server never read (a plain close would make the kernel answer them with RST)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from server.runtime.linger import linger_close

LAST_WORDS = b"* BYE [TOOBIG] Command too long.\r\n"


async def serve_once(close_with_linger: bool) -> bytes:
    got_bytes = asyncio.Event()
    handled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(10)  # the start of a command too long
            got_bytes.set()
            writer.write(LAST_WORDS)
            if close_with_linger:
                await linger_close(writer, reader, seconds=5)
            else:
                await writer.drain()
                writer.close()
        finally:
            handled.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        client.sendall(b"x" * 10)
        await got_bytes.wait()
        # More of the command arrives after the server has decided: unread at its close.
        client.sendall(b"y" * 200_000)
        await asyncio.sleep(0)  # let the server answer and close (not a wait for time)
        loop = asyncio.get_running_loop()
        answer = b""
        while True:
            chunk = await loop.run_in_executor(None, client.recv, 4096)
            if not chunk:
                return answer
            answer += chunk
    finally:
        client.close()  # the lingering server sees EOF and ends
        await handled.wait()
        server.close()
        await server.wait_closed()


def test_the_last_words_arrive_and_then_eof() -> None:
    assert asyncio.run(serve_once(close_with_linger=True)) == LAST_WORDS


def test_without_lingering_the_kernel_resets_the_connection() -> None:
    """The failure linger_close exists for (Linux: unread data at close -> RST)."""
    with pytest.raises(ConnectionResetError):
        asyncio.run(serve_once(close_with_linger=False))
