"""Handed-in sockets (server/runtime/records.py): what the peer already sent is read before
the streams exist, and nothing is lost or reordered by it."""

from __future__ import annotations

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
