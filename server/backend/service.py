"""What the IMAP and POP3 back ends share."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from server import retrieval
from server.backend.handoff import HandoffListener
from server.backend.handover import prove_peer
from server.directory import (
    DirectoryUnavailable,
    Entry,
    ProxySecret,
    find_entry,
    ldap_for,
    may_use_protocol,
)
from server.moves import fence
from server.protocols import handover
from server.retrieval.receipts import ReceiptSender, Submit
from server.runtime import tls
from server.runtime.listeners import ListenerSet
from server.runtime.protocol_log import ProtocolLog
from server.runtime.service import Service, ServiceContext
from server.settings.models import (
    Mailbox,
    OwaVirtualDirectorySettings,
    ProtocolSettings,
    Server,
    Settings,
)
from server.settings.paths import Home
from server.settings.types import IPEndPoint
from server.store.api import MailStore

# Before a peer has proved it is a front end (server/protocols/handover.py), a back end
# reads at most handover.MAX_INPUT bytes from it, gives it HANDOVER_DEADLINE seconds in all
# (bytes arriving do not extend it), and holds at most MAX_UNAUTHENTICATED such peers at once.
# A front end needs two round trips on a local link: milliseconds.
HANDOVER_DEADLINE = 10.0
MAX_UNAUTHENTICATED = 64
# A move's end-sessions request gives a session this long to take its goodbye (a client that
# reads nothing can hold it in drain()) before its connection is aborted, and as long again
# for a running command to finish, after which the session cannot write.
END_GRACE = 10.0

T = TypeVar("T")


def render_for_retrieval(
    raw: bytes,
    *,
    protocol: str,
    mailbox: Mailbox | None,
    settings: ProtocolSettings,
    item: retrieval.ItemRef | None = None,
    owa: OwaVirtualDirectorySettings | None = None,
) -> bytes:
    """The bytes a client retrieves for a stored message: MessageRetrievalMimeFormat and
    CalendarItemRetrievalOption applied (server.retrieval), rendered once per message and
    options and cached. The stored bytes themselves when the options leave them alone
    (BestBodyFormat/Tnef with iCalendar: no parsing, no copy).

    protocol: "IMAP4" or "POP3"; mailbox: the user's directory entry (its per-mailbox
    overrides count when *UseProtocolDefaults is false); settings: the server's
    ImapSettings or PopSettings in force; item: which stored message this is (the cache key,
    and what calendar links point at; without it the cache keys on a digest of the bytes and
    calendar parts stay iCalendar); owa: the virtual directory of the mailbox's server."""
    options = retrieval.effective_options(protocol, mailbox, settings, owa)
    if options.as_stored:
        return raw
    return retrieval.CACHE.data(raw, options, item)


def retrieval_view(
    settings: Settings,
    server: str,
    protocol: str,
    mailbox: str,
    folder: str,
    uidvalidity: int,
    receipts: ReceiptSender | None = None,
) -> retrieval.RetrievalView:
    """The retrieval options of one folder, read now from the live settings: what a FETCH
    command or a POP3 session renders with (sizes, ENVELOPE, BODYSTRUCTURE and bytes all
    from the same rendering)."""
    options = retrieval.options_for(settings, server, protocol, mailbox)
    return retrieval.RetrievalView(options, mailbox, folder, uidvalidity, receipts=receipts)


def spool_submit(home: Home, server: str) -> Submit:
    """How this server's back ends hand read receipts to submission: its spool, from which
    the queue delivers them through MSExchangeDelivery like any other message. Retrieval
    gets this callable, so it needs no import of submission (or of anything else here)."""
    from server.submission.queue import Recipient, Spool

    spool = Spool(home.queue / server)

    def submit(address: str, mailbox: str | None, target: str | None, message: bytes) -> None:
        spool.add("", [Recipient(address, mailbox, target)], message)

    return submit


def open_default_store(home: Home, server: str) -> MailStore:
    from server.store import open_store  # the store package is optional at import time

    return open_store(home, server)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class BackendService(Service):
    """The service plumbing both back ends share: the store, the listeners on the
    BackEndAddress and the TLS context that only front ends connect to.

    A subclass names its certificate (CERTIFICATE), its two ports (ports()) and how a
    connection is served (_handler_for)."""

    CERTIFICATE = ""
    PROTOCOL = ""  # "IMAP4" / "POP3": the hand-over's and the hand-off channel's protocol
    # Tests replace this to run on a fake store.
    store_factory: Callable[[Home, str], MailStore] = staticmethod(open_default_store)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        # Only front ends connect, from nearby: a TLS handshake gets the hand-over's time.
        self._listeners = ListenerSet(self._handler_for, handshake_timeout=HANDOVER_DEADLINE)
        self._store: MailStore | None = None
        self._tls = tls.LiveContext(session_tickets=False)  # only front ends connect
        self._connections: dict[asyncio.Task[Any], Any] = {}
        self.session_ids = itertools.count(1)
        self.protocol_log = ProtocolLog.for_service(ctx)
        self.proxy_secret = ProxySecret(ctx.home)
        self.unauthenticated = 0  # peers in the hand-over now
        self.max_unauthenticated = MAX_UNAUTHENTICATED
        self.handover_deadline = HANDOVER_DEADLINE
        # Front ends on this host hand logged-in clients over here (backend/handoff.py).
        self.handoff = HandoffListener(self, self.PROTOCOL)
        self._handed: set[asyncio.Task[None]] = set()
        self._receipts: ReceiptSender | None = None

    def _handler_for(self, implicit_tls: bool) -> Handler:
        raise NotImplementedError

    def receipt_sender(self) -> ReceiptSender:
        """The read-receipt sender of this back end's sessions: MDNs go to this server's
        submission spool (spool_submit). One for all of them (it keeps nothing of a
        session's): every login needs it, and the first builds it with an import."""
        sender = self._receipts
        if sender is None:
            ctx = self.ctx
            sender = ReceiptSender(lambda: ctx.settings, spool_submit(ctx.home, ctx.server))
            self._receipts = sender
        return sender

    def ports(self, server: Server) -> tuple[int, int]:
        """(plain port, TLS port) this back end listens on."""
        raise NotImplementedError

    async def start(self) -> None:
        self._store = await asyncio.to_thread(
            type(self).store_factory, self.ctx.home, self.ctx.server
        )
        self.receipt_sender()  # its import now, not in the first login
        try:
            await self._reconcile()
            self.handoff.start()
        except BaseException:
            self._listeners.close()
            self.handoff.close()
            await asyncio.to_thread(self._store.close)
            raise

    async def reload(self, old: Settings, new: Settings) -> None:
        await self._reconcile()

    async def reload_certificates(self) -> None:
        await self._reconcile()  # the listeners stay as they are; the context gets the new chain

    async def _reconcile(self) -> None:
        server = self.ctx.server_settings
        cert = await asyncio.to_thread(
            tls.ensure_certificate, self.ctx.home, self.CERTIFICATE, server.Fqdn
        )
        context = self._tls.use(cert)
        address = server.BackEndAddress
        plain, secure = self.ports(server)
        await self._listeners.reconcile(
            [IPEndPoint(address, plain)], [IPEndPoint(address, secure)], context
        )

    def _close_listeners(self) -> None:
        """No new sessions: the back-end ports and the hand-off channels close."""
        self._listeners.close()
        self.handoff.close()

    def spawn_session(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a handed-off session (kept referenced until it ends)."""
        task = asyncio.ensure_future(coro)
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)

    async def handoff_secret(self) -> bytes:
        return self.proxy_secret.cached() or await asyncio.to_thread(self.proxy_secret.load)

    # Each back end serves handed-off sessions in its own protocol (backend/handoff.py).
    async def handoff_open(self, accepted: handover.Accepted) -> tuple[bytes, Any] | str:
        raise NotImplementedError

    def handoff_open_now(self, accepted: handover.Accepted) -> tuple[bytes, Any] | str | None:
        return None  # a back end that can open without blocking says so

    def handoff_start(
        self, opened: Any, sock: socket.socket, read_ahead: bytes, ended: Callable[[], None]
    ) -> None:
        raise NotImplementedError

    def handoff_discard(self, opened: Any) -> None:
        raise NotImplementedError

    async def _close_store(self) -> None:
        self.protocol_log.close()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None

    def status(self) -> dict[str, Any]:
        return {"connections": len(self._connections), "endpoints": self._listeners.endpoints}

    async def hand_over(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: str,
        login: Callable[[handover.Accepted], Awaitable[T | str]],
    ) -> tuple[handover.Accepted, T] | None:
        """Run the back end's side of the hand-over; on success `login(accepted)` opens the
        mailbox (a str is the refusal text for the front end) and the caller gets both,
        with "OK" already written. None: the peer failed or was refused, the caller closes.

        Until the peer's proof is checked nothing else is read (backend/handover.py), within
        handover_deadline seconds, max_unauthenticated peers at a time."""
        shake = await prove_peer(
            self, reader, writer, protocol, self.handover_deadline, self.max_unauthenticated
        )
        if shake is None:
            return None
        assert shake.accepted is not None
        accepted = shake.accepted
        result = await login(accepted)
        if isinstance(result, str):
            self.ctx.log.info(
                "service=%s event=handover-refused mailbox=%r reason=%r",
                self.ctx.name,
                accepted.mailbox,
                result,
            )
            writer.write(shake.refuse(result))
            await writer.drain()
            return None
        writer.write(shake.ok())
        return accepted, result

    def bound_port(self, tls_port: bool = False) -> int:
        server = self.ctx.server_settings
        plain, secure = self.ports(server)
        return self._listeners.bound_port(
            server.BackEndAddress, secure if tls_port else plain, tls_port
        )


class HandOverRefused(Exception):
    """A hand-over (of a proved front end) the back end refuses. `kind` is "auth" (the login or
    the mailbox's rights), "perm" (the mailbox lives on another server) or "temp" (a move
    of the mailbox is switching it): each protocol turns it into its own answer (IMAP NO,
    POP3 -ERR [AUTH] / [SYS/PERM] / [SYS/TEMP])."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def check_hand_over(ctx: ServiceContext, settings: Settings, protocol: str, mailbox: str) -> Entry:
    """What both back ends check once a front end has proved itself: the mailbox, that THIS
    server holds it, and that it may use the protocol."""
    try:
        # stale_ok: the front end verified this login against the directory a moment ago.
        entry = find_entry(settings, mailbox, ctx.home, stale_ok=True) if mailbox else None
    except DirectoryUnavailable:
        raise HandOverRefused("auth", "The directory is unavailable; try again later") from None
    if entry is None:
        raise HandOverRefused("auth", "Authentication failed: no such mailbox")
    if entry.server_name.lower() != ctx.server.lower():
        moving = fence.in_transit(ctx.home, ctx.server, entry.name)
        if moving is not None:  # this process's directory answer may be from before a switch
            raise HandOverRefused("temp", f"Mailbox {entry.name}: {moving}")
        raise HandOverRefused(
            "perm", f"Mailbox {entry.name} is on server {entry.server_name}, not this one"
        )
    reason = may_use_protocol(entry, protocol)
    if reason is not None:
        raise HandOverRefused("auth", f"Access denied: {reason}")
    moving = fence.refusal(ctx.home, ctx.server, entry.name)
    if moving is not None:  # a move's final pass, or just switched (server/moves/fence.py)
        raise HandOverRefused("temp", f"Mailbox {entry.name}: {moving}")
    return entry


def directory_may_block(ctx: ServiceContext, settings: Settings) -> bool:
    """Whether check_hand_over may wait on the network: an LDAP directory's lookup is a
    search. The settings file's directory and the fence files are local lookups, fit for
    the event loop."""
    return ldap_for(settings, ctx.home) is not None


async def end_sessions(
    name: str, sessions: list[Any], end: Callable[[Any], Awaitable[None]], ctx: ServiceContext
) -> dict[str, Any]:
    """A mailbox move's request (server/moves/): end these sessions of mailbox `name` and
    answer once none of them can write any more; each `end` waits for the session's running
    command. Logged, as a move is something an administrator asks about later."""
    if sessions:
        await asyncio.gather(*(end(s) for s in sessions), return_exceptions=True)
    ctx.log.info(
        "service=%s event=sessions-ended-for-move mailbox=%r sessions=%d",
        ctx.name,
        name,
        len(sessions),
    )
    return {"ended": len(sessions)}
