"""One POP3 session of the back end after the hand-over: the sans-IO session
(server/protocols/pop3/session.py) driven by the bytes of its socket.

A command is answered inside the callback that delivered its bytes: the session's actions
run there, and its answer goes to the transport in one write. STAT, UIDL, LIST and the RETR
of a small message (read on the event loop, see OpenMaildrop.small) need nothing else, so a
RETR costs no task wake-up, future or coroutine, which on a 4 KB message is a good part of
the back end's work (bench/README.md, "POP3 session in the back end"). What has to wait
(UPDATE, a big message read in a worker thread, a body sent from its file a slice at a time,
a client that does not read its answers) runs in a task, with reading paused until it is
done, so pipelined commands still run in order and what is waiting stays bounded.

The bytes come from a SessionProtocol (a handed-off client socket) or, for a relayed
connection that arrived through the back-end port, from its StreamReader.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from server.backend.pop3.maildrop import READ_SIZE, WRITE_SLICE, FileBody, OpenMaildrop
from server.frontend.relay import take_buffered
from server.protocols import proxyv2
from server.protocols.pop3.session import (
    Action,
    Authenticate,
    Close,
    Pop3Session,
    Request,
    Retrieve,
    Send,
    Update,
)
from server.store.api import StoreError

if TYPE_CHECKING:
    from server.backend.pop3.server import Pop3BackendService

FLUSH_AT = 256 * 1024  # write out pipelined replies once this much is waiting
WRITE_HIGH_WATER = 64 * 1024  # asyncio's default: wait for the client above this


class IdleTimer:
    """One timer handle per connection rather than one per read (asyncio.wait_for makes a
    task and a timer for every command): arming and disarming only move a deadline, and
    the handle, when it fires before the deadline, sets itself again for the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        handle = self._handle
        if handle is not None and handle.when() > deadline:  # a shorter timeout than before
            handle.cancel()
            handle = None
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        self._deadline = None  # busy answering: the handle, if it fires, waits for arm()

    def cancel(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._expire()


class Sink(Protocol):
    """What takes a session's bytes in its data callback (Pop3Connection, and the IMAP
    back end's connection, server/backend/imap/server.py)."""

    def received(self, data: bytes) -> None: ...

    def ended(self) -> None: ...


class SessionProtocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol whose bytes go straight to a session while one is attached
    (`sink`), and to its StreamReader otherwise (before the session starts, and for the
    lingering close after it ends). drain(), close waiters and EOF work as for any
    stream."""

    sink: Sink | None = None

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            super().data_received(data)
        else:
            sink.received(data)

    def eof_received(self) -> bool | None:
        if self.sink is not None:
            self.sink.ended()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink is not None:
            self.sink.ended()
        super().connection_lost(exc)


async def session_streams(
    sock: socket.socket, read_ahead: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SessionProtocol]:
    """Streams over a socket handed in from a front end, with a SessionProtocol;
    `read_ahead` (bytes already taken from the socket) is in the StreamReader first."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16, loop=loop)
    if read_ahead:
        reader.feed_data(read_ahead)  # before the transport can deliver anything newer
    protocol = SessionProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol


class _Drain:
    """The action "wait until the client has read enough of what is queued for it"."""


DRAIN = _Drain()
Pending = Action | _Drain


class Pop3Connection:
    """A POP3 session on one connection, from the greeting to the end of UPDATE (the
    caller closes the connection)."""

    def __init__(
        self,
        service: Pop3BackendService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: proxyv2.ProxyInfo | None = None,
        session: Pop3Session | None = None,
        protocol: SessionProtocol | None = None,
    ) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.client = client
        self.session = session or Pop3Session(service.session_settings)
        self.login: OpenMaildrop | None = None
        self.session_id = next(service.session_ids)
        self.started = time.monotonic()  # when the bytes being answered arrived (for logs)
        self._protocol = protocol
        self._transport = cast(asyncio.Transport, writer.transport)  # a stream: reads too
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._busy: asyncio.Task[None] | None = None  # answering what has to wait
        self._ended = False  # EOF or connection lost
        self._paused = False  # reading paused while busy (SessionProtocol only)
        self._idle = IdleTimer(self._loop, self._transport.close)

    # --- the session's life --------------------------------------------------------------
    async def run(
        self, login: OpenMaildrop, greeted: bool = False, read_ahead: bytes = b""
    ) -> None:
        """Serve until QUIT's UPDATE is done or the client is gone. `greeted`: a handed-off
        client, whose session already said its greeting to the front end (which answered
        the client's login instead); `read_ahead`: what the client sent behind its login."""
        self.login = login
        if greeted:
            greeting = b""
        else:
            greeting = self.session.preauthenticated(login.mailbox, login.maildrop)
            self._transport.write(greeting)
        self._log(Request("OpenSession"), greeting, len(greeting))
        protocol = self._protocol
        try:
            if protocol is not None:
                # What came before the session took the socket waits in the StreamReader.
                early = read_ahead + take_buffered(self.reader)
                protocol.sink = self
                if early:
                    self._transport.resume_reading()  # should the StreamReader have paused it
                    self.received(early)
                else:
                    self._idle.arm(self._timeout())
                if self.reader.at_eof() or self._transport.is_closing():
                    self.ended()
                await self._done
            else:
                self._idle.arm(self._timeout())
                await self._read_stream()
        finally:
            self._idle.cancel()
            if protocol is not None:
                protocol.sink = None
            if self._paused and not self._transport.is_closing():
                self._paused = False
                self._transport.resume_reading()  # the lingering close reads what is left
            busy = self._busy
            if busy is not None and not busy.done():
                busy.cancel()

    async def _read_stream(self) -> None:
        """A relayed connection: its StreamReader's bytes, one read at a time."""
        while not self._done.done():
            busy = self._busy
            if busy is not None:
                await asyncio.wait([busy])
                continue
            data = await self.reader.read(READ_SIZE)
            if not data:
                self.ended()
                break
            self.received(data)
        await self._done

    def received(self, data: bytes) -> None:
        """Bytes from the client: answer every complete command now, or start the task
        for the first one that has to wait (later ones wait behind it, in order)."""
        if self._done.done():
            return
        self._idle.disarm()
        self.started = time.monotonic()
        try:
            self.session.receive(data)
            if self._busy is None:
                self._answer(self._answer_now())
        except Exception as exc:  # a bug ends this session, never the service
            self._finish(exc)

    def ended(self) -> None:
        """EOF or the connection is gone: done, once what is being answered is."""
        self._ended = True
        if self._busy is None:
            self._finish()

    def _answer(self, pending: Pending | None) -> None:
        if pending is None:
            if self._ended:
                self._finish()
            else:
                self._idle.arm(self._timeout())
        elif isinstance(pending, Close):
            self._finish()
        else:
            if self._protocol is not None and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            self._busy = self._loop.create_task(self._answer_later(pending))

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._done.done():
            return
        if exc is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(exc)

    def _timeout(self) -> float:
        pre, authenticated = self.service.timeouts()
        return authenticated if self.session.authenticated else pre

    # --- answering -----------------------------------------------------------------------
    def _answer_now(self) -> Pending | None:
        """Run the session's actions while they need no waiting; the first that does (or
        Close) is returned, after everything before it went to the transport. None: the
        session waits for more input."""
        session = self.session
        out: list[bytes] = []
        waiting = 0
        while (action := session.next_action()) is not None:
            if isinstance(action, Send):
                chunks = action.chunks
                size = sum(map(len, chunks))
                if size > WRITE_SLICE:  # a FileBody always is (see OpenMaildrop.file_body)
                    self._write(out)
                    return action  # sent a slice at a time (_send_big)
                out.extend(chunks)
                waiting += size
                self._log(action.request, chunks[0], size)
                if waiting >= FLUSH_AT:
                    self._write(out)
                    out, waiting = [], 0
                    if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                        return DRAIN
            elif isinstance(action, Retrieve) and self._small(action):
                self._deliver(action, self._read(action))  # on the loop: no thread hop
            elif isinstance(action, Authenticate):  # sessions start authenticated: never
                session.auth_failed("[AUTH] Only the front-end hand-over logs in here")
            else:
                self._write(out)
                return action
        self._write(out)
        if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            return DRAIN
        return None

    def _write(self, out: list[bytes]) -> None:
        if out:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _answer_later(self, pending: Pending) -> None:
        """The task for what has to wait, and for the commands queued behind it."""
        try:
            action: Pending | None = pending
            while action is not None and not isinstance(action, Close):
                if isinstance(action, Send):
                    await self._send_big(action)
                elif isinstance(action, Retrieve):
                    self._deliver(action, await asyncio.to_thread(self._read, action))
                elif isinstance(action, Update):
                    await self._update(action)
                else:
                    await self._wait_for_client()
                action = self._answer_now()
        except Exception as exc:  # ConnectionError from drain() included: the caller sorts
            self._busy = None
            self._finish(exc)
            return
        self._busy = None
        if action is None and not self._ended and self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._answer(action)

    async def _send_big(self, action: Send) -> None:
        """A big answer, WRITE_SLICE at a time with a wait for the client between slices,
        so the transport never holds a copy of a big message for a client that reads
        slowly (or not at all)."""
        chunks = action.chunks
        self._log(action.request, chunks[0], sum(map(len, chunks)))
        for chunk in chunks:
            if isinstance(chunk, FileBody):
                await self._send_file(chunk)
                continue
            view = memoryview(chunk)
            for at in range(0, len(view), WRITE_SLICE):
                self._transport.write(view[at : at + WRITE_SLICE])
                await self._wait_for_client()

    async def _send_file(self, body: FileBody) -> None:
        left = body.size
        try:
            while left > 0:
                data = await asyncio.to_thread(body.file.read, min(WRITE_SLICE, left))
                if not data:  # body files never change; should one shrink, end its last line
                    self._transport.write(b"\r\n")
                    break
                left -= len(data)
                self._transport.write(data)
                await self._wait_for_client()
        finally:
            body.file.close()

    async def _wait_for_client(self) -> None:
        if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            service = self.service
            service.waiting_for_clients += 1
            try:
                await self.writer.drain()
            finally:
                service.waiting_for_clients -= 1

    def _log(self, request: Request, first: bytes, size: int) -> None:
        log = self.service.protocol_log
        if not log.enabled:
            return
        local = self.writer.get_extra_info("sockname") or ("", 0)
        client = (
            (self.client.client_address, self.client.client_port)
            if self.client
            else (self.writer.get_extra_info("peername") or ("", 0))
        )
        log.command(
            self.session_id,
            f"{local[0]}:{local[1]}",
            f"{client[0]}:{client[1]}",
            self.login.mailbox if self.login else None,
            (time.monotonic() - self.started) * 1000,
            request.size,
            size,
            request.command,
            request.parameters,
            "R=OK" if first.startswith(b"+") else "R=ERR",
        )

    # --- retrieval and UPDATE ------------------------------------------------------------
    def _small(self, action: Retrieve) -> bool:
        return self.login is not None and self.login.small(action.msg)

    def _read(self, action: Retrieve) -> tuple[bytes | FileBody, bool] | None:
        assert self.login is not None
        return self.login.source(action.msg, action.lines)

    def _deliver(self, action: Retrieve, read: tuple[bytes | FileBody, bool] | None) -> None:
        if read is None:
            self.session.retrieve_failed(f"Message {action.msg} is no longer available")
        else:
            # A FileBody passes through the session untouched (wire-ready: only its len() is
            # used) and comes back in a Send, which _send_big sends from its file.
            self.session.retrieved(cast(bytes, read[0]), wire_ready=read[1])

    async def _update(self, action: Update) -> None:
        assert self.login is not None
        try:
            await asyncio.to_thread(self.login.update, action.delete, action.seen)
        except StoreError:
            self.session.updated("Some deleted messages were not removed")
        else:
            self.session.updated(None)

    def release(self) -> None:
        if self.login is not None:
            self.login.release()
            self.login = None
