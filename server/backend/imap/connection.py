"""The IMAP back end's pieces for answering a handed-off session in its data callback.

A handed-off client socket (server/backend/handoff.py) gets a SessionProtocol
(server/backend/pop3/connection.py): its bytes go straight to the connection
(server/backend/imap/server.py, _Connection.received), which runs the jobs that need no
worker thread right there and writes their output, without a StreamReader waiter, a task
wake-up or a coroutine per command. What has to wait (a job for a worker thread, a client
that does not read, the lingering close) goes to the connection's async pump, with the
same lock held, so pipelined commands keep their order and IDLE/NOTIFY pushes, which take
that lock, never slip between a command and its answer.
"""

from __future__ import annotations

import asyncio
import socket

from server.backend.pop3.connection import SessionProtocol
from server.backend.pop3.connection import session_streams as pop3_session_streams
from server.runtime.records import waiting


class ConnectionLock(asyncio.Lock):
    """The connection's lock (commands, pushes, goodbye), which a data callback can also
    take without awaiting when it is free."""

    def acquire_now(self) -> bool:
        """Take the lock if that needs no wait; False when it is held or others queue for
        it (they are first)."""
        if self.locked():
            return False
        acquiring = self.acquire()
        try:
            acquiring.send(None)
        except StopIteration:
            return True  # free and nobody queued: taken without suspending
        acquiring.close()  # it would wait: take back the place it queued for
        return False


async def session_streams(
    sock: socket.socket, read_ahead: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SessionProtocol]:
    """The handed-in socket's streams (POP3's, server/backend/pop3/connection.py):
    `read_ahead` and what waits in the socket now are in the StreamReader first."""
    return await pop3_session_streams(sock, read_ahead + waiting(sock))


__all__ = ["ConnectionLock", "session_streams"]
