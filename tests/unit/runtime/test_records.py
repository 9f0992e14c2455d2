"""Handed-in sockets (server/runtime/records.py): what the peer already sent is read before
the streams exist, and nothing is lost or reordered by it."""

from __future__ import annotations

import asyncio
import socket

from server.runtime import records


def test_waiting_takes_what_was_sent_and_never_waits() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        assert records.waiting(mine) == b""  # nothing yet: no wait, no error
        theirs.sendall(b"a NOOP\r\n")
        assert records.waiting(mine) == b"a NOOP\r\n"
        theirs.close()
        assert records.waiting(mine) == b""  # the EOF is left for the transport


def test_streams_give_read_ahead_then_the_socket_then_what_comes_later() -> None:
    async def scenario() -> bytes:
        mine, theirs = socket.socketpair()
        theirs.sendall(b"2 second\r\n")
        reader, writer = await records.stream_from(mine, b"1 first\r\n")
        theirs.sendall(b"3 third\r\n")
        theirs.shutdown(socket.SHUT_WR)
        data = await reader.read()
        writer.close()
        theirs.close()
        return data

    assert asyncio.run(scenario()) == b"1 first\r\n2 second\r\n3 third\r\n"


def test_a_peer_gone_before_the_streams_is_an_eof() -> None:
    async def scenario() -> bytes:
        mine, theirs = socket.socketpair()
        theirs.sendall(b"last words\r\n")
        theirs.close()
        reader, writer = await records.stream_from(mine, b"")
        data = await reader.read()
        writer.close()
        return data

    assert asyncio.run(scenario()) == b"last words\r\n"
