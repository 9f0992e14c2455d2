"""The back end's side of the hand-off channel (server/protocols/handoff.py): a Unix
SOCK_SEQPACKET listener next to the control socket, over which front ends on this host
give it logged-in client connections as file descriptors. Each process of the back end
(BackEndWorkerProcesses, server/runtime/workers.py) has its own listener and says which
process it is when a channel is set up; the front end picks the process by mailbox.

A peer is served only if it runs as this service's user (SO_PEERCRED) and proves it knows
the proxy secret, under the hand-over's bounds for unproved peers (the same count, a fixed
deadline). After that, each LOGIN opens the mailbox (`open`), answers OK with the
protocol's first lines or NO, and the TAKE that follows brings the client socket: the
session then runs here (`start`), and END goes back when it is over. docs/security.md,
"The hand-off channel".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from server.protocols import handoff, handover
from server.runtime import records
from server.runtime.filemodes import private_dir
from server.runtime.service import ServiceContext
from server.runtime.workers import handoff_address

#: Sessions a channel may have open (OK sent) and not yet taken, and for how long.
MAX_PENDING = 256
TAKE_DEADLINE = 10.0


class HandoffTarget(Protocol):
    """What a back-end service gives the channel."""

    ctx: ServiceContext
    unauthenticated: int
    max_unauthenticated: int
    handover_deadline: float

    async def handoff_secret(self) -> bytes: ...

    async def handoff_open(self, accepted: handover.Accepted) -> tuple[bytes, Any] | str:
        """Open the mailbox: (the protocol's first lines, the opened session) or the
        refusal text."""
        ...

    def handoff_open_now(self, accepted: handover.Accepted) -> tuple[bytes, Any] | str | None:
        """handoff_open without waiting, when nothing on its way can block; None when
        something could (then the channel awaits handoff_open)."""
        ...

    def handoff_start(
        self, opened: Any, sock: socket.socket, read_ahead: bytes, ended: Callable[[], None]
    ) -> None:
        """Run the opened session on the client socket; call `ended` when it is over."""
        ...

    def handoff_discard(self, opened: Any) -> None:
        """An opened session whose socket never came: release what it holds."""
        ...


def address(ctx: ServiceContext, backend_name: str) -> str:
    """This process's channel socket: each process of the back end has its own."""
    return handoff_address(ctx.home, backend_name, ctx.server, ctx.worker)


class _Channel:
    def __init__(self, listener: HandoffListener, sock: socket.socket) -> None:
        self.listener = listener
        self.target = listener.target
        self.codec: handoff.BackendChannel | None = None
        self.pending: dict[int, tuple[Any, asyncio.TimerHandle]] = {}
        self.opening = 0
        self.counted = True  # in target.unauthenticated until proved
        self.target.unauthenticated += 1
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.target.handover_deadline, self._too_slow)
        self.records = records.Records(sock, handoff.MAX_RECORD, self._on_record, self._closed)

    async def begin(self) -> None:
        try:
            secret = await self.target.handoff_secret()
        except Exception:  # noqa: BLE001 - no secret, no channel
            self.records.close()
            return
        if self.records.closed:
            return
        ctx = self.target.ctx
        self.codec = handoff.BackendChannel(
            secret, self.listener.protocol, ctx.server, ctx.worker, ctx.workers
        )
        self.records.send(self.codec.challenge())

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.target.unauthenticated -= 1
            self.deadline.cancel()

    def _too_slow(self) -> None:
        ctx = self.target.ctx
        ctx.log.info("service=%s event=handoff-timeout", ctx.name)
        self.records.close()

    def _on_record(self, data: bytes, fds: list[int]) -> None:
        codec = self.codec
        try:
            if codec is None:
                raise handover.HandoverError("record before the challenge")
            if not codec.proved:
                records.close_fds(fds)
                answer = codec.setup(data)
                if answer:
                    self.records.send(answer)
                if codec.proved:
                    self._uncount()
                return
            kind, seq, value = codec.session(data)
        except handover.HandoverError as exc:
            records.close_fds(fds)
            ctx = self.target.ctx
            ctx.log.warning("service=%s event=handoff-failed error=%r", ctx.name, str(exc))
            self.records.close()
            return
        if kind == "login":
            records.close_fds(fds)
            assert isinstance(value, handover.Accepted)
            if len(self.pending) + self.opening >= MAX_PENDING:
                self.records.send(codec.refuse(seq, "Too many hand-offs at once"))
                return
            # Most logins are opened right here: no task, no worker thread, and the OK goes
            # out in this callback. Only what may block (a directory search, a mailbox's
            # first open) waits in a task of its own.
            try:
                result = self.target.handoff_open_now(value)
            except Exception:  # noqa: BLE001 - a bug refuses this login, not the channel
                result = self._open_failed()
            if result is None:
                self.opening += 1
                self.listener.spawn(self._open(seq, value))
            else:
                self._opened(seq, result)
        elif kind == "take":
            assert isinstance(value, bytes)
            found = self.pending.pop(seq, None)
            if found is None or len(fds) != 1:
                records.close_fds(fds)
                if found is not None:
                    found[1].cancel()
                    self.target.handoff_discard(found[0])
                return
            opened, timer = found
            timer.cancel()
            sock = socket.socket(fileno=fds[0])
            self.target.handoff_start(opened, sock, value, lambda: self._ended(seq))
        else:  # drop
            records.close_fds(fds)
            self._discard(seq)

    def _open_failed(self) -> str:
        self.target.ctx.log.exception("service=%s event=handoff-open-error", self.target.ctx.name)
        return "The mailbox cannot be opened now"

    async def _open(self, seq: int, accepted: handover.Accepted) -> None:
        try:
            result = await self.target.handoff_open(accepted)
        except Exception:  # noqa: BLE001 - a bug refuses this login, not the channel
            result = self._open_failed()
        finally:
            self.opening -= 1
        self._opened(seq, result)

    def _opened(self, seq: int, result: tuple[bytes, Any] | str) -> None:
        assert self.codec is not None
        if isinstance(result, str):
            self.records.send(self.codec.refuse(seq, result))
            return
        greeting, opened = result
        if self.records.closed:
            self.target.handoff_discard(opened)
            return
        timer = asyncio.get_running_loop().call_later(TAKE_DEADLINE, self._discard, seq)
        self.pending[seq] = (opened, timer)
        self.records.send(self.codec.ok(seq, greeting))

    def _discard(self, seq: int) -> None:
        found = self.pending.pop(seq, None)
        if found is not None:
            found[1].cancel()
            self.target.handoff_discard(found[0])

    def _ended(self, seq: int) -> None:
        if self.codec is not None:
            self.records.send(self.codec.end(seq))

    def _closed(self) -> None:
        self._uncount()
        for seq in list(self.pending):
            self._discard(seq)
        self.listener.channels.discard(self)


class HandoffListener:
    """The listening socket and its channels, for one back-end service."""

    def __init__(self, target: HandoffTarget, protocol: str) -> None:
        self.target = target
        self.protocol = protocol
        self.channels: set[_Channel] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sock: socket.socket | None = None
        self._address = ""

    def start(self) -> None:
        if self._sock is not None:
            return
        self._address = address(self.target.ctx, self.target.ctx.name)
        try:
            if not self._address.startswith("\0"):
                private_dir(Path(self._address).parent)
            self._sock = records.listen(self._address)
        except OSError as exc:
            # Front ends then relay over the back-end ports, as they would to another host.
            ctx = self.target.ctx
            ctx.log.warning("service=%s event=handoff-unavailable error=%r", ctx.name, exc)
            return
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            target = self.target
            if records.peer_uid(sock) != os.getuid():
                sock.close()  # only this service's own user may hand sessions over
                continue
            if target.unauthenticated >= target.max_unauthenticated:
                target.ctx.log.warning(
                    "service=%s event=handoff-refused reason=%r",
                    target.ctx.name,
                    "too many connections in the hand-over",
                )
                sock.close()
                continue
            channel = _Channel(self, sock)
            self.channels.add(channel)
            self.spawn(channel.begin())

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if not self._address.startswith("\0"):
                with contextlib.suppress(OSError):
                    os.unlink(self._address)
        for channel in list(self.channels):
            channel.records.close()
        for task in list(self._tasks):
            task.cancel()


__all__ = ["HandoffListener", "HandoffTarget", "address"]
