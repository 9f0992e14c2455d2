"""MSExchangePOP3BE: the POP3 back end, the sans-IO session over the mailbox store.

It accepts only front ends: every connection starts with the hand-over (server/protocols/
handover.py, run by BackendService.hand_over), in which the front end proves it knows the
proxy secret and names the mailbox and the real client. POP3 then begins in the TRANSACTION
state, its greeting the maildrop's size, so no POP3 command from an unproved peer is ever
parsed. The maildrop (server/backend/pop3/maildrop.py) is the mailbox's INBOX, locked for
the whole session (RFC 1939 section 8: one session per maildrop); deletions happen only in UPDATE after
QUIT, in one store call, so a dropped connection deletes nothing. IMAP sessions on the same
mailbox keep working and see the deletions as EXPUNGEs through the store's notifications.

Settings are read from ctx.settings at each use: Banner at the greeting, MaxCommandSize at
each command, the timeouts at each read, MessageRetrievalSortOrder / EnableExactRFC822Size /
MessageRetrievalMimeFormat / CalendarItemRetrievalOption / SuppressReadReceipt at login
(message numbers, sizes and the bytes they measure are fixed for a session: server.retrieval
renders them). With the options that leave messages as stored, RETR sends the body file's
bytes with no rendering step.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from server.backend import service as common
from server.backend.pop3.maildrop import (
    INBOX,
    READ_SIZE,
    WRITE_SLICE,
    BodyPaths,
    FileBody,
    OpenMaildrop,
    open_maildrop,
)
from server.moves import fence
from server.protocols import proxyv2
from server.protocols.handover import Accepted
from server.protocols.pop3.responses import Capabilities
from server.protocols.pop3.session import (
    Authenticate,
    Close,
    Pop3Session,
    Request,
    Retrieve,
    Send,
    SessionSettings,
    Update,
)
from server.retrieval import RetrievalView
from server.runtime import records
from server.runtime.linger import linger_close
from server.runtime.service import ServiceContext
from server.settings.models import PopSettings, Server, Settings
from server.store.api import MailboxInUse, StoreError

FLUSH_AT = 256 * 1024  # write out pipelined replies once this much is waiting
WRITE_HIGH_WATER = 64 * 1024  # asyncio's default: wait for the client above this

# The back end repeats what front ends offer before login (RFC 2449 section 5): USER there
# is checked by the front end, here only the proxy's AUTH PLAIN is accepted.
CAPABILITIES = Capabilities(sasl=("PLAIN",), user=True, stls=False)


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


@dataclass(eq=False)
class _Connection:
    service: Pop3BackendService
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client: proxyv2.ProxyInfo | None = None
    session: Pop3Session = field(init=False)
    login: OpenMaildrop | None = None
    session_id: int = 0
    started: float = 0.0  # when the bytes being answered arrived (for log durations)

    def __post_init__(self) -> None:
        self.session = Pop3Session(self.service.session_settings)
        self.session_id = next(self.service.session_ids)
        self.started = time.monotonic()

    async def run(self, login: OpenMaildrop, greeted: bool = False) -> None:
        """`greeted`: a handed-off client, whose session already said its greeting to the
        front end (which answered the client's login instead)."""
        self.login = login
        if greeted:
            greeting = b""
        else:
            greeting = self.session.preauthenticated(login.mailbox, login.maildrop)
            self.writer.write(greeting)
        self._log(Request("OpenSession"), greeting, len(greeting))
        loop = asyncio.get_running_loop()
        # RFC 1939 section 3: an idle client is dropped without UPDATE and without a reply.
        # Closing the transport ends the pending read with EOF.
        idle = IdleTimer(loop, self.writer.transport.close)
        try:
            while True:
                idle.arm(self._timeout())
                data = await self.reader.read(READ_SIZE)
                idle.disarm()
                if not data:
                    return
                self.started = time.monotonic()
                self.session.receive(data)
                if not await self._answer():
                    return
        finally:
            idle.cancel()

    def _timeout(self) -> float:
        pre, authenticated = self.service.timeouts()
        return authenticated if self.session.authenticated else pre

    async def _answer(self) -> bool:
        """Run the session's actions until it needs more input; False: close."""
        out: list[bytes] = []
        waiting = 0
        while (action := self.session.next_action()) is not None:
            match action:
                case Send(chunks=chunks, request=request):
                    out.extend(chunks)
                    size = sum(map(len, chunks))
                    waiting += size
                    self._log(request, chunks[0], size)
                    if waiting >= FLUSH_AT:
                        await self._flush(out)
                        waiting = 0
                case Authenticate():  # sessions start authenticated: never reached
                    self.session.auth_failed("[AUTH] Only the front-end hand-over logs in here")
                case Retrieve():
                    if self.login is not None and self.login.small(action.msg):
                        self._deliver(action, self._read(action))  # no thread hop
                    else:
                        await self._retrieve_async(action)
                case Update():
                    await self._update(action)
                case Close():
                    await self._flush(out)
                    return False
        await self._flush(out)
        return True

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

    async def _flush(self, out: list[bytes]) -> None:
        """One write for what is waiting; waits for the client only when the transport's
        buffer is over the high-water mark (a drain() per reply costs more than the reply).
        A big message goes out in WRITE_SLICE pieces with that wait between them, so the
        transport never holds a copy of it for a client that reads slowly (or not at all)."""
        if not out:
            return
        if sum(map(len, out)) <= WRITE_SLICE:
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            await self._wait_for_client()
            return
        chunks = out[:]
        out.clear()
        for chunk in chunks:
            if isinstance(chunk, FileBody):
                await self._send_file(chunk)
                continue
            view = memoryview(chunk)
            for at in range(0, len(view), WRITE_SLICE):
                self.writer.write(view[at : at + WRITE_SLICE])
                await self._wait_for_client()

    async def _send_file(self, body: FileBody) -> None:
        left = body.size
        try:
            while left > 0:
                data = await asyncio.to_thread(body.file.read, min(WRITE_SLICE, left))
                if not data:  # body files never change; should one shrink, end its last line
                    self.writer.write(b"\r\n")
                    break
                left -= len(data)
                self.writer.write(data)
                await self._wait_for_client()
        finally:
            body.file.close()

    async def _wait_for_client(self) -> None:
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            self.service.waiting_for_clients += 1
            try:
                await self.writer.drain()
            finally:
                self.service.waiting_for_clients -= 1

    # --- login ---------------------------------------------------------------------------
    async def open_login(self, mailbox: str) -> OpenMaildrop | str:
        """Open the maildrop a proved front end hands over; a str is the refusal text."""
        return await self.service.open_login(mailbox)

    # --- retrieval -----------------------------------------------------------------------
    def _deliver(self, action: Retrieve, read: tuple[bytes | FileBody, bool] | None) -> None:
        if read is None:
            self.session.retrieve_failed(f"Message {action.msg} is no longer available")
        else:
            # A FileBody passes through the session untouched (wire-ready: only its len() is
            # used) and comes back to _flush in a Send, which sends it from its file.
            self.session.retrieved(cast(bytes, read[0]), wire_ready=read[1])

    def _read(self, action: Retrieve) -> tuple[bytes | FileBody, bool] | None:
        assert self.login is not None
        return self.login.source(action.msg, action.lines)

    async def _retrieve_async(self, action: Retrieve) -> None:
        self._deliver(action, await asyncio.to_thread(self._read, action))

    # --- UPDATE --------------------------------------------------------------------------
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


def _release_orphan(job: asyncio.Future[OpenMaildrop | str]) -> None:
    if not job.cancelled() and job.exception() is None:
        result = job.result()
        if isinstance(result, OpenMaildrop):
            result.release()


class Pop3BackendService(common.BackendService):
    CERTIFICATE = "POP"
    PROTOCOL = "POP3"

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._sessions: dict[asyncio.Task[Any], _Connection] = {}  # those logged in
        self._session_settings: tuple[Settings, SessionSettings] | None = None
        self._timeouts: tuple[Settings, tuple[float, float]] | None = None
        self.body_paths = BodyPaths()
        self.waiting_for_clients = 0  # connections in drain(): their client reads slowly

    # --- settings ------------------------------------------------------------------------
    def pop_settings(self) -> PopSettings:
        return self.ctx.server_settings.PopSettings

    def ports(self, server: Server) -> tuple[int, int]:
        return server.PopBackEndPort, server.PopBackEndSSLPort

    def timeouts(self) -> tuple[float, float]:
        """(PreAuthenticatedConnectionTimeout, AuthenticatedConnectionTimeout) in seconds,
        derived once per settings object (a reload replaces it) rather than at every read."""
        cached = self._timeouts
        if cached is not None and cached[0] is self.ctx.settings:
            return cached[1]
        pop = self.pop_settings()
        built = (
            pop.PreAuthenticatedConnectionTimeout.total_seconds(),
            pop.AuthenticatedConnectionTimeout.total_seconds(),
        )
        self._timeouts = (self.ctx.settings, built)
        return built

    def session_settings(self) -> SessionSettings:
        cached = self._session_settings
        if cached is not None and cached[0] is self.ctx.settings:
            return cached[1]
        pop = self.pop_settings()
        built = SessionSettings(
            banner=pop.Banner,
            max_command_size=pop.MaxCommandSize,
            capabilities=CAPABILITIES,
            user_pass=False,
            server_name=f"{self.ctx.server_settings.Fqdn} POP3 server",
        )
        self._session_settings = (self.ctx.settings, built)
        return built

    # --- service -------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """POP3 has no unsolicited goodbye: stop accepting, let sessions end by themselves
        for up to `grace` seconds, then close the rest without UPDATE (nothing is deleted)."""
        self._close_listeners()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                # Aborting the transport ends the session's read with EOF, so the handler
                # returns normally (a cancelled stream handler makes asyncio log an error).
                self._connections[task].transport.abort()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self._close_store()

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"op": "end-sessions", "mailbox": name}: a move of the mailbox is switching it to
        another server. POP3 has no unsolicited goodbye, so the session gets one -ERR and the
        connection closes without UPDATE; the answer comes once its handler is done (an
        UPDATE already running finishes first)."""
        if request.get("op") != "end-sessions":
            return await super().control(request)
        name = str(request.get("mailbox", "")).casefold()
        text = str(request.get("text") or "The mailbox has moved; reconnect")
        tasks = [
            t
            for t, c in self._sessions.items()
            if c.login is not None and c.login.mailbox.casefold() == name
        ]

        async def end(task: asyncio.Task[Any]) -> None:
            writer = self._connections.get(task)
            if writer is not None and not writer.is_closing():
                writer.write(f"-ERR [SYS/TEMP] {text}\r\n".encode())
                writer.close()  # the session's read ends with EOF
            _, late = await asyncio.wait([task], timeout=common.END_GRACE)
            if late and writer is not None:
                writer.transport.abort()
                await asyncio.wait([task], timeout=common.END_GRACE)

        return await common.end_sessions(name, tasks, end, self.ctx)

    # --- connections ---------------------------------------------------------------------
    def _handler_for(self, implicit_tls: bool):  # noqa: ANN202 - ListenerSet's Handler type
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer)

        return handle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            opening = _Connection(self, reader, writer)
            try:
                handed = await self.hand_over(
                    reader, writer, "POP3", lambda accepted: opening.open_login(accepted.mailbox)
                )
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                handed = None
            except Exception:  # a bug ends this session, never the service
                self.ctx.log.exception("service=%s event=session-error", self.ctx.name)
                handed = None
            if handed is None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return
            accepted, login = handed
            opening.client = accepted.client
            await self._run(opening, login)
        finally:
            self._connections.pop(task, None)

    async def _run(
        self, connection: _Connection, login: OpenMaildrop, greeted: bool = False
    ) -> None:
        writer = connection.writer
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = connection
        try:
            # A move's fence raised since the login's check: its end-sessions request may
            # not have seen this session (server/moves/fence.py).
            moving = fence.refusal(self.ctx.home, self.ctx.server, login.mailbox)
            if moving is not None:
                connection.login = login
                writer.write(f"-ERR [SYS/TEMP] {moving}\r\n".encode())
                return
            await connection.run(login, greeted)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:  # a bug ends this session, never the service
            self.ctx.log.exception("service=%s event=session-error", self.ctx.name)
        finally:
            self._sessions.pop(task, None)
            connection.release()
            self.protocol_log.end(connection.session_id)
            # After QUIT or an -ERR that ends the session: FIN, not an RST that loses it.
            await linger_close(writer, connection.reader)
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def open_login(self, mailbox: str) -> OpenMaildrop | str:
        """Open the maildrop a proved front end hands over; a str is the refusal text."""
        job = asyncio.ensure_future(asyncio.to_thread(self.login, mailbox))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The thread may still take the maildrop lock: give it back when it does.
            job.add_done_callback(_release_orphan)
            raise
        except StoreError as exc:
            return f"-ERR [SYS/TEMP] {exc}"
        except Exception:
            self.ctx.log.exception("service=%s event=login-error", self.ctx.name)
            return "-ERR [SYS/TEMP] The mailbox cannot be opened now"

    # --- the hand-off channel (backend/handoff.py) ----------------------------------------
    async def handoff_open(
        self, accepted: Accepted
    ) -> tuple[bytes, tuple[Pop3Session, OpenMaildrop, proxyv2.ProxyInfo | None]] | str:
        login = await self.open_login(accepted.mailbox)
        if isinstance(login, str):
            return login
        session = Pop3Session(self.session_settings)
        greeting = session.preauthenticated(login.mailbox, login.maildrop)
        return greeting, (session, login, accepted.client)

    def handoff_start(
        self,
        opened: tuple[Pop3Session, OpenMaildrop, proxyv2.ProxyInfo | None],
        sock: socket.socket,
        read_ahead: bytes,
        ended: Callable[[], None],
    ) -> None:
        session, login, client = opened

        async def serve() -> None:
            task = asyncio.current_task()
            assert task is not None
            connection: _Connection | None = None
            try:
                reader, writer = await records.stream_from(sock, read_ahead)
                self._connections[task] = writer
                connection = _Connection(self, reader, writer, client)
                connection.session = session
                await self._run(connection, login, greeted=True)
            except OSError:
                sock.close()
                login.release()
            finally:
                self._connections.pop(task, None)
                ended()

        self.spawn_session(serve())

    def handoff_discard(
        self, opened: tuple[Pop3Session, OpenMaildrop, proxyv2.ProxyInfo | None]
    ) -> None:
        opened[1].release()

    # --- login (in a worker thread) ------------------------------------------------------
    def login(self, mailbox: str) -> OpenMaildrop | str:
        """Open the maildrop of a mailbox a proved front end hands over; a str is the
        refusal, as the -ERR text the front end passes on."""
        settings = self.ctx.settings
        try:
            entry = common.check_hand_over(self.ctx, settings, "POP3", mailbox)
        except common.HandOverRefused as refused:
            code = {"perm": "[SYS/PERM]", "temp": "[SYS/TEMP]"}.get(refused.kind, "[AUTH]")
            return f"-ERR {code} {refused.text}"
        name = entry.name
        store = self._store
        assert store is not None

        def view_for(uidvalidity: int) -> RetrievalView:
            return common.retrieval_view(
                settings, self.ctx.server, "POP3", name, INBOX, uidvalidity, self.receipt_sender()
            )

        try:
            return open_maildrop(
                store.mailbox(name),
                name,
                entry.mailbox,
                self.pop_settings,
                view_for,
                self.body_paths,
            )
        except MailboxInUse:
            return "-ERR [IN-USE] Maildrop is in use by another session"
