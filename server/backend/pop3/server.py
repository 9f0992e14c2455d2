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
from collections.abc import Callable
from typing import Any

from server.backend import service as common
from server.backend.pop3.connection import Pop3Connection, session_streams
from server.backend.pop3.maildrop import INBOX, BodyPaths, OpenMaildrop, open_maildrop
from server.moves import fence
from server.protocols import proxyv2
from server.protocols.handover import Accepted
from server.protocols.pop3.responses import Capabilities
from server.protocols.pop3.session import Pop3Session, SessionSettings
from server.retrieval import RetrievalView
from server.runtime import records
from server.runtime.linger import linger_close
from server.runtime.service import ServiceContext
from server.settings.models import PopSettings, Server, Settings
from server.store.api import MailboxInUse, StoreError

# The back end repeats what front ends offer before login (RFC 2449 section 5): USER there
# is checked by the front end, here only the proxy's AUTH PLAIN is accepted.
CAPABILITIES = Capabilities(sasl=("PLAIN",), user=True, stls=False)


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
        self._sessions: dict[asyncio.Task[Any], Pop3Connection] = {}  # those logged in
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
            try:
                handed = await self.hand_over(
                    reader, writer, "POP3", lambda accepted: self.open_login(accepted.mailbox)
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
            await self._run(Pop3Connection(self, reader, writer, accepted.client), login)
        finally:
            self._connections.pop(task, None)

    async def _run(
        self,
        connection: Pop3Connection,
        login: OpenMaildrop,
        greeted: bool = False,
        read_ahead: bytes = b"",
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
            await connection.run(login, greeted, read_ahead)
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
            try:
                early = read_ahead + records.waiting(sock)  # see records.waiting
                reader, writer, protocol = await session_streams(sock)
                self._connections[task] = writer
                connection = Pop3Connection(self, reader, writer, client, session, protocol)
                await self._run(connection, login, greeted=True, read_ahead=early)
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
