"""A Unix SOCK_SEQPACKET socket on the event loop: whole records in and out, with file
descriptors (SCM_RIGHTS) where a record carries one. The front-end to back-end hand-off
channel (server/protocols/handoff.py) runs on it.

Neither asyncio's nor uvloop's transports pass descriptors, so this drives the socket with
the loop's add_reader/add_writer: a readable socket is drained record by record in one
callback, and a record the kernel cannot take now waits in a queue (its descriptors
duplicated until it is sent, so the caller may close its own at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end (SO_PEERCRED)."""
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Records:
    """One connected SOCK_SEQPACKET socket. `on_record(data, fds)` is called for each
    record (the callee owns `fds`); `on_close()` once, when either side closes it or it
    breaks."""

    def __init__(
        self,
        sock: socket.socket,
        max_record: int,
        on_record: Callable[[bytes, list[int]], None],
        on_close: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.max_record = max_record
        self.on_record = on_record
        self.on_close = on_close
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._out: deque[tuple[bytes, list[int]]] = deque()
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _ = socket.recv_fds(
                    self.sock, self.max_record, 1, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not data:
                close_fds(fds)
                self.close()  # an empty record is the peer's close; a cut one, a broken peer
                return
            self.on_record(data, fds)

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send one record now or as soon as the socket can take it."""
        if self.closed:
            return
        if not self._out:
            try:
                if fds:
                    socket.send_fds(self.sock, [data], list(fds))
                else:
                    self.sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fd, self._writable)
            except OSError:
                self.close()
                return
        self._out.append((data, [os.dup(fd) for fd in fds]))

    def _writable(self) -> None:
        while self._out and not self.closed:
            data, fds = self._out[0]
            try:
                if fds:
                    socket.send_fds(self.sock, [data], fds)
                else:
                    self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            self._out.popleft()
            close_fds(fds)
        if not self.closed:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        for _, fds in self._out:
            close_fds(fds)
        self._out.clear()
        self.sock.close()
        self.on_close()


async def connect(address: str) -> socket.socket:
    """A connected SOCK_SEQPACKET socket to `address` (a path or an abstract name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def listen(address: str) -> socket.socket:
    """A listening SOCK_SEQPACKET socket at `address`, reachable by this user only when it
    is a path (an abstract name has no permissions: the peer's uid is checked instead)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if not address.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
        sock.bind(address)
        if not address.startswith("\0"):
            os.chmod(address, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def waiting(sock: socket.socket, limit: int = 2**16) -> bytes:
    """What the peer has sent that waits in the socket now, without waiting for more
    (b"" when nothing does; an EOF or an error is left for the transport built next to
    find). A handed-in client socket is read so before its streams exist: on a busy loop
    the client's first command is usually there already, and is then answered without
    the loop iterations of a transport's first read."""
    try:
        return sock.recv(limit, socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing yet
        return b""


__all__ = ["Records", "close_fds", "connect", "listen", "peer_uid", "waiting"]
