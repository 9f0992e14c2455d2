"""The login proxy shared by the IMAP4 and POP3 front ends.

A front end owns everything before login: listeners (UnencryptedOrTLSBindings with
STARTTLS/STLS, SSLBindings with implicit TLS), the greeting, the login policy (LoginType),
connection limits, the pre-authentication timeout and the failed-login slow-down. After a
good login it finds the server that holds the mailbox, opens a connection to that server's
back end, hands the session over and relays bytes both ways until either side closes.

Each protocol brings two sans-IO pieces (see imap.py, pop3.py): a `LoginCore` that turns
client bytes into events (Send, StartTls, LoginRequest) and renders the answers, and a
`BackendLogin` that speaks the hand-over to the back end. This module is the I/O around them.

Hand-over: TCP (TLS when ProxyTargetPort is the target's SSL port) to
<target>.BackEndAddress, then the mutual challenge-response of server/protocols/handover.py:
the back end proves it knows the proxy secret first, and only then does the front end name
the mailbox and the real client (a PROXY v2 header) under its own proof. The secret itself
never crosses the wire. After the back end's OK the protocol runs already authenticated
(IMAP: a PREAUTH greeting with the capabilities; POP3: +OK with the maildrop's size).

Same host: when the mailbox lives on this front end's own server, none of the above runs
per session; the session is handed to the back end over a long-lived channel
(server/frontend/handoff.py): a plaintext client's socket itself, a TLS client's through a
socket pair. What follows is for mailboxes on other servers (and MAILCTL_HANDOFF=off).

Which back-end port: ProxyTargetPort is a setting of the front-end server, while each target
server has its own back-end ports. When ProxyTargetPort equals this server's
Imap/PopBackEndSSLPort the front end uses the target's SSL port; when it equals the plain
back-end port, the target's plain port; any other value is used as given (TLS when it is the
target's SSL port). So a fresh install proxies over TLS, and servers whose back ends listen
on other ports still work.

The TLS hop is Exchange's default and the safe one when front and back ends are on different
hosts. When they share a host (or a trusted private link), `Set-ImapSettings -ProxyTargetPort
<ImapBackEndPort>` / `Set-PopSettings -ProxyTargetPort <PopBackEndPort>` drops it: no second
handshake per session, no encryption per relayed byte, and about 20 KB less per idle session
in each of the two processes (the TLS state of each end of the hop). The hand-over is
mutually authenticated either way, but only TLS keeps the relayed session private and
intact on the wire (docs/security.md). With EnforceCertificateErrors the TLS hop also checks
the back end's certificate (the organization's CA or the system's, and the target's Fqdn).
The back-end TLS client context and the proxy secret are kept between sessions and looked
at again only when their files change (tls.shared_client_context, ProxySecret).

Login decisions (reference section 5): wrong password or unknown user -> the same answer,
after the same argon2 time. A mailbox that may not use the protocol (Anonymous, Guest,
Administrator, PopEnabled/ImapEnabled false) gets its refusal reason only after the right
password; with a wrong one it gets the same answer as an unknown user, so the answer never
tells a password guesser whether the account exists or what kind it is. Every refused
login counts as a failure for the slow-down (throttle.py) and for the per-connection limit:
after MAX_LOGON_FAILURES failures the connection is closed.

Protocol log (ProtocolLogEnabled): a line for the greeting, each command before login and
the login itself (the cores say which command an answer finishes, LoginCore.log_entry), then
one "proxy" line when the relay ends, with the bytes relayed each way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from server.directory import Directory, DirectoryUnavailable, Entry, ProxySecret, may_use_protocol
from server.directory.login import LoginGate
from server.frontend.handoff import HandoffClient, hand_off
from server.frontend.handoff import enabled as handoff_enabled
from server.frontend.limits import ConnectionLimits
from server.frontend.relay import RelayStats, relay, take_buffered
from server.protocols import handover, proxyv2
from server.runtime import tls
from server.runtime.linger import linger_close
from server.runtime.listeners import ListenerSet
from server.runtime.protocol_log import ProtocolLog
from server.runtime.service import Service, ServiceContext
from server.settings.models import ProtocolSettings, Server, Settings
from server.settings.types import LoginType

if TYPE_CHECKING:
    from server.frontend.relay import Transforms

MAX_LOGON_FAILURES = 3  # Exchange's receive-connector default, applied per connection
BACKEND_TIMEOUT = 15.0  # connect + hand-over; a slower back end counts as down


# ---------------------------------------------------------------------------- sans-IO types


@dataclass(frozen=True)
class Policy:
    """What the login core needs to know about the connection and the settings in force."""

    tls_active: bool
    tls_available: bool
    login_type: LoginType
    max_command_size: int

    @property
    def clear_login_allowed(self) -> bool:
        """IMAP LOGIN, POP3 USER/PASS: only PlainTextLogin allows them without TLS."""
        return self.tls_active or self.login_type is LoginType.PlainTextLogin

    @property
    def sasl_plain_allowed(self) -> bool:
        """IMAP AUTHENTICATE PLAIN, POP3 AUTH PLAIN: PlainTextAuthentication and
        PlainTextLogin allow them without TLS; SecureLogin only after TLS."""
        return self.tls_active or self.login_type is not LoginType.SecureLogin


@dataclass(frozen=True)
class Send:
    data: bytes
    close: bool = False


@dataclass(frozen=True)
class StartTls:
    """Send `data`, drop every byte the client sent after the command, start TLS."""

    data: bytes


@dataclass(frozen=True)
class LoginRequest:
    user: str
    password: str
    ref: str  # the IMAP tag (POP3: the command), to answer with


Event = Send | StartTls | LoginRequest


@dataclass(frozen=True)
class LogEntry:
    """A finished command, for the protocol log (parameters never hold a password)."""

    command: str  # lower case, as Exchange logs it
    parameters: str
    rqsize: int  # octets of the command, continuation lines included
    result: str  # "R=OK", "R=NO", "R=ERR", ...


class Refusal(Enum):
    BAD_CREDENTIALS = "bad credentials"
    POLICY = "not allowed"
    USER_LIMIT = "too many connections for the user"
    UNAVAILABLE = "mailbox server unavailable"
    BACKEND_REFUSED = "refused by the mailbox server"  # detail: the back end's answer line


class LoginCore(ABC):
    """The pre-authentication half of a protocol, sans-IO."""

    @abstractmethod
    def greeting(self) -> bytes: ...

    @abstractmethod
    def receive(self, data: bytes) -> None: ...

    @abstractmethod
    def next_event(self, policy: Policy) -> Event | None:
        """The next thing to do, or None when more client bytes are needed."""

    @abstractmethod
    def discard_buffer(self) -> None:
        """Forget unread client bytes (after STARTTLS)."""

    @abstractmethod
    def leftover(self) -> bytes:
        """Client bytes read but not used (pipelined after the login): for the back end."""

    @abstractmethod
    def refuse(self, request: LoginRequest, refusal: Refusal, detail: str = "") -> bytes: ...

    @abstractmethod
    def accept(self, request: LoginRequest, capabilities: str | None) -> bytes: ...

    @abstractmethod
    def goodbye(self, reason: str) -> bytes:
        """The last words before the front end closes (limit, timeout, shutdown)."""

    @abstractmethod
    def refuse_connection(self, reason: str) -> bytes: ...

    def log_entry(self, answer: bytes) -> LogEntry | None:
        """The command `answer` finishes, for the protocol log; None when it finishes none
        (a continuation request). Asked only while protocol logging is on."""
        return None


class BackendError(Exception):
    """The back end is unreachable, or refused or broke the hand-over."""


class BackendLost(BackendError):
    """The back end closed the connection during the hand-over's last step."""


class BackendRefused(BackendError):
    """The back end answered the hand-over login with a refusal; `response` is its line
    (CRLF stripped), so a protocol can pass a meaningful response code on to the client."""

    def __init__(self, message: str, response: str) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True)
class BackendSend:
    data: bytes


@dataclass(frozen=True)
class BackendDone:
    capabilities: str | None  # what the back end supports after login (IMAP)


class BackendLogin(ABC):
    """The hand-over conversation with a back end, sans-IO: lines in, steps out."""

    @abstractmethod
    def on_line(self, line: bytes) -> BackendSend | BackendDone | None:
        """Next step after a line (CRLF included) from the back end; raise BackendError."""


# ---------------------------------------------------------------------------- proved ahead


@dataclass
class _Proved:
    """A back-end connection whose hand-over stopped after the back end's PROOF: the back
    end has shown it knows the proxy secret, the front end has sent nothing but its nonce."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    shake: handover.FrontendHandshake
    expiry: asyncio.TimerHandle | None = None


class ProvedPool:
    """Back-end connections connected, TLS-handshaken and proved ahead of time, one per
    login that is likely to come: each login takes one (or opens its own when none is
    ready) and asks for a replacement, so while logins keep coming the TCP connect, the
    TLS handshake and two of the hand-over's three round trips are off the login's path.
    Each connection serves one session only: the per-session step is the hand-over's own
    LOGIN line (mailbox and client address under an HMAC over both sides' nonces of that
    connection), so a proved connection carries nothing reusable (docs/security.md).

    Bounded: at most MAX per target, each kept TTL seconds (well inside the back end's
    HANDOVER_DEADLINE for unproved peers), closed when unused; nothing is opened ahead
    of time before the first login to a target, or after the logins stop."""

    MAX = 4
    TTL = 4.0

    def __init__(self) -> None:
        self._ready: dict[tuple[Any, ...], list[_Proved]] = {}
        self._opening: dict[tuple[Any, ...], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0

    def take(self, key: tuple[Any, ...]) -> _Proved | None:
        ready = self._ready.get(key)
        while ready:
            proved = ready.pop()
            if proved.expiry is not None:
                proved.expiry.cancel()
            if (
                not proved.writer.is_closing()
                and not proved.reader.at_eof()
                # private: a StreamReader has no public "bytes already waiting"
                and not proved.reader._buffer  # pyright: ignore[reportAttributeAccessIssue]
            ):
                self.hits += 1
                return proved
            proved.writer.close()  # the back end gave up on it (or said something)
        self.misses += 1
        return None

    def refill(self, key: tuple[Any, ...], open_proved: Callable[[], Awaitable[_Proved]]) -> None:
        """Prove one more connection to `key` in the background, within the bound."""
        if len(self._ready.get(key, ())) + self._opening.get(key, 0) >= self.MAX:
            return
        self._opening[key] = self._opening.get(key, 0) + 1

        async def prove() -> None:
            try:
                proved = await asyncio.wait_for(open_proved(), BACKEND_TIMEOUT)
            except Exception:  # noqa: BLE001 - ahead of time only: the login will retry
                return
            finally:
                self._opening[key] -= 1
            ready = self._ready.setdefault(key, [])
            if len(ready) >= self.MAX:
                proved.writer.close()
                return
            ready.append(proved)
            proved.expiry = asyncio.get_running_loop().call_later(
                self.TTL, self._expire, key, proved
            )

        task = asyncio.get_running_loop().create_task(prove())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire(self, key: tuple[Any, ...], proved: _Proved) -> None:
        ready = self._ready.get(key, [])
        if proved in ready:
            ready.remove(proved)
        proved.writer.close()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for ready in self._ready.values():
            for proved in ready:
                if proved.expiry is not None:
                    proved.expiry.cancel()
                proved.writer.close()
        self._ready.clear()


# ---------------------------------------------------------------------------- the service


class _Live:
    """The protocol's settings of one settings object, and what is derived from them."""

    __slots__ = ("settings", "protocol", "idle_timeout", "policies")

    def __init__(self, settings: Settings, protocol: ProtocolSettings) -> None:
        self.settings = settings
        self.protocol = protocol
        self.idle_timeout = protocol.PreAuthenticatedConnectionTimeout.total_seconds()
        self.policies: dict[tuple[bool, bool], Policy] = {}


class FrontendService(Service):
    """One front-end service (MSExchangeIMAP4 or MSExchangePOP3)."""

    protocol: ClassVar[str]  # "IMAP4" / "POP3": may_use_protocol and logs
    backend_name: ClassVar[str]  # the back-end service of this protocol (the hand-off channel)
    cert_kind: ClassVar[str]  # "IMAP" / "POP": Enable-ExchangeCertificate -Services

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.directory = Directory(ctx.home)
        self.limits = ConnectionLimits()
        self.logins = LoginGate(self.directory)  # the password check and its slow-down
        self.max_logon_failures = MAX_LOGON_FAILURES
        self.listeners = ListenerSet(self._handler_for)
        self.ssl_context: ssl.SSLContext | None = None
        self._thumbprint: str | None = None
        self._sessions: set[Session] = set()
        self._stopping = False
        self.protocol_log = ProtocolLog.for_service(ctx)
        self.session_ids = itertools.count(1)
        self.proxy_secret = ProxySecret(ctx.home)
        self.proved = ProvedPool()
        self._live: _Live | None = None
        self.handoff = (
            HandoffClient(ctx.home, self.backend_name, self.protocol, ctx.server)
            if handoff_enabled()
            else None
        )

    def live(self) -> _Live:
        """What each client command looks up in the settings in force, found once per
        settings object (a reload replaces the object, it never changes one in place)."""
        settings = self.ctx.settings
        live = self._live
        if live is None or live.settings is not settings:
            live = self._live = _Live(settings, self.protocol_settings(settings))
        return live

    def policy(self, tls_active: bool) -> Policy:
        """The login core's Policy for a connection with or without TLS now."""
        live = self.live()
        tls_available = self.ssl_context is not None
        key = (tls_active, tls_available)
        found = live.policies.get(key)
        if found is None:
            ps = live.protocol
            found = live.policies[key] = Policy(
                tls_active=tls_active,
                tls_available=tls_available,
                login_type=ps.LoginType,
                max_command_size=ps.MaxCommandSize,  # type: ignore[attr-defined]
            )
        return found

    # --- protocol hooks -------------------------------------------------------------
    @abstractmethod
    def protocol_settings(self, settings: Settings | None = None) -> ProtocolSettings: ...

    @abstractmethod
    def new_core(self, settings: ProtocolSettings) -> LoginCore: ...

    @abstractmethod
    def backend_login(self) -> BackendLogin:
        """The conversation after the hand-over's OK (the back end's first protocol lines)."""

    @abstractmethod
    def backend_ports(self, target: Server) -> tuple[int, int]:
        """(plain port, SSL port) of the target's back end for this protocol."""

    def backend_lost(self, last_chunk: bytes) -> bytes:
        """What to tell the client when the back end closes on its own mid-session."""
        return b""

    def relay_transforms(self) -> Transforms | None:
        """Rewrites of one session's relayed bytes (IMAP COMPRESS), or None."""
        return None

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_certificate()
        await self._reconcile()
        self.ctx.log.info(
            "service=%s started endpoints=%s", self.ctx.name, ",".join(self.listeners.endpoints)
        )

    async def reload(self, old: Settings, new: Settings) -> None:
        await self._reconcile()  # the listeners follow the settings even if the next fails
        await self._load_certificate()

    async def reload_certificates(self) -> None:
        await self._load_certificate()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self.listeners.close()
        for session in list(self._sessions):
            session.shutdown()
        if self._sessions:
            waiters = [s.done for s in self._sessions]
            await asyncio.wait(waiters, timeout=grace)
        for session in list(self._sessions):
            session.abort()
        self.proved.close()
        if self.handoff is not None:
            self.handoff.close()
        self.protocol_log.close()

    def status(self) -> dict[str, Any]:
        return {
            "connections": self.limits.total,
            "endpoints": self.listeners.endpoints,
            "certificate": self._thumbprint,
        }

    async def _load_certificate(self) -> None:
        ps = self.protocol_settings()
        try:
            cert = await asyncio.to_thread(
                tls.certificate_for,
                self.ctx.home,
                self.cert_kind,
                ps.X509CertificateName,
                self.ctx.server_settings.Fqdn,
            )
        except tls.CertificateNotFound as exc:
            # At start the service does not start; at a reload the certificate in force
            # keeps serving. Either way the reason reaches Get-Service (LastReload).
            self.ctx.log.error("service=%s event=certificate-not-found %s", self.ctx.name, exc)
            raise
        if self.ssl_context is None:
            self.ssl_context = tls.server_context(cert)
        elif cert.thumbprint != self._thumbprint:
            # Same context object: listeners keep it, new handshakes get the new chain.
            tls.reload_context(self.ssl_context, cert)
        self._thumbprint = cert.thumbprint

    async def _reconcile(self) -> None:
        ps = self.protocol_settings()
        await self.listeners.reconcile(
            ps.UnencryptedOrTLSBindings, ps.SSLBindings, self.ssl_context
        )

    def _handler_for(self, implicit_tls: bool):  # noqa: ANN202 - ListenerSet's Handler
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, implicit_tls)

        return handle

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit_tls: bool
    ) -> None:
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        ip = str(peer[0])
        ps = self.protocol_settings()
        core = self.new_core(ps)
        refusal = (
            "Server is shutting down"
            if self._stopping
            else self.limits.open(ip, ps.MaxConnections, ps.MaxConnectionFromSingleIP)
        )
        if refusal:
            self.ctx.log.warning(
                "service=%s event=refused client=%s reason=%r", self.ctx.name, ip, refusal
            )
            try:
                writer.write(core.refuse_connection(refusal))
                await asyncio.wait_for(writer.drain(), 5)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
            return
        session = Session(self, core, reader, writer, implicit_tls, peer)
        self._sessions.add(session)
        try:
            await session.run()
        except (OSError, ssl.SSLError, EOFError, ConnectionError) as exc:
            self.ctx.log.info("service=%s event=closed client=%s error=%r", self.ctx.name, ip, exc)
        except Exception:  # one broken session must never take the service down
            self.ctx.log.exception("service=%s event=session-error client=%s", self.ctx.name, ip)
        finally:
            self._sessions.discard(session)
            if not session.handed_off:  # else the back end's END closes the count
                self.limits.close(ip)
            session.abort()
            if not session.done.done():
                session.done.set_result(None)

    # --- routing --------------------------------------------------------------------
    def target_of(self, entry: Entry) -> tuple[str, int, bool]:
        """(address, port, tls) of the back end that holds the mailbox."""
        own_plain, own_ssl = self.backend_ports(self.ctx.server_settings)
        plain, ssl_port = self.backend_ports(entry.server)
        wanted = self.protocol_settings().ProxyTargetPort
        if wanted == own_ssl:
            port = ssl_port
        elif wanted == own_plain:
            port = plain
        else:
            port = wanted
        return entry.server.BackEndAddress, port, port == ssl_port

    async def open_backend(
        self, entry: Entry, client: tuple[Any, ...], local: tuple[Any, ...]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str | None]:
        host, port, use_tls = self.target_of(entry)
        ps = self.protocol_settings()
        context = None
        if use_tls:
            context = tls.shared_client_context(self.ctx.home, verify=ps.EnforceCertificateErrors)
        secret = self.proxy_secret.cached() or await asyncio.to_thread(self.proxy_secret.load)
        fqdn = entry.server.Fqdn if context is not None else None
        # Everything the proof and the connection depend on: a changed secret, CA or target
        # never gets a connection proved under the old one.
        key = (host, port, id(context), fqdn, secret, entry.server_name)

        def open_proved() -> Awaitable[_Proved]:
            return self._open_proved(host, port, context, fqdn, secret, entry.server_name)

        header = proxyv2.encode(
            proxyv2.ProxyInfo(
                str(client[0]),
                int(client[1]),
                str(local[0]),
                int(local[1]),
            )
        )
        proved = self.proved.take(key)
        self.proved.refill(key, open_proved)
        if proved is not None:
            try:
                return await self._finish_handover(proved, entry, header)
            except (BackendLost, ConnectionError):
                pass  # closed (or reset) while it waited: prove a fresh one now
        return await self._finish_handover(await open_proved(), entry, header)

    async def _open_proved(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        fqdn: str | None,
        secret: bytes,
        server_name: str,
    ) -> _Proved:
        """Connect and run the hand-over until the back end has proved itself."""
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=fqdn
        )
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            shake = handover.FrontendHandshake(secret, self.protocol, server_name, None, b"")
            try:
                while not shake.ready:
                    answer = shake.on_line(await self._backend_line(reader))
                    if answer:
                        writer.write(answer)
            except handover.HandoverError as exc:
                # ImpostorError included: nothing but our nonce was sent.
                raise BackendError(f"hand-over failed: {exc}") from None
            return _Proved(reader, writer, shake)
        except BaseException:
            writer.close()
            raise

    async def _finish_handover(
        self, proved: _Proved, entry: Entry, header: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str | None]:
        """The per-session step: LOGIN (mailbox and client under this connection's
        nonces), the back end's OK, then the protocol's first lines."""
        reader, writer, shake = proved.reader, proved.writer, proved.shake
        try:
            writer.write(shake.login(entry.name, header))
            try:
                while not shake.done:
                    try:
                        line = await self._backend_line(reader)
                    except BackendError as exc:
                        raise BackendLost(str(exc)) from None
                    answer = shake.on_line(line)
                    if answer:
                        writer.write(answer)
            except handover.HandoverRefused as refused:
                raise BackendRefused(f"hand-over refused: {refused.text!r}", refused.text) from None
            except handover.HandoverError as exc:
                raise BackendError(f"hand-over failed: {exc}") from None
            conversation = self.backend_login()
            while True:
                step = conversation.on_line(await self._backend_line(reader))
                if isinstance(step, BackendSend):
                    writer.write(step.data)
                elif isinstance(step, BackendDone):
                    return reader, writer, step.capabilities
        except BaseException:
            writer.close()
            raise

    @staticmethod
    async def _backend_line(reader: asyncio.StreamReader) -> bytes:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise BackendError("the mailbox server closed the connection") from None
        except asyncio.LimitOverrunError:
            raise BackendError("the mailbox server sent an overlong line") from None
        return line


class Session:
    """One client connection of a front end."""

    def __init__(
        self,
        service: FrontendService,
        core: LoginCore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        implicit_tls: bool,
        peer: tuple[Any, ...],
    ) -> None:
        self.service, self.core = service, core
        self.reader, self.writer = reader, writer
        self.tls_active = implicit_tls
        self.peer = peer
        self.ip = str(peer[0])
        self.failures = 0
        self.user: str | None = None  # mailbox name once logged in and counted
        self.relaying = False
        self.handed_off = False  # the back end of this host has the connection now
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._backend_writer: asyncio.StreamWriter | None = None
        self.log: logging.Logger = service.ctx.log
        self._stop_requested = False
        self.session_id = next(service.session_ids)
        # Kept now: a closed TLS transport no longer knows its addresses.
        local = writer.get_extra_info("sockname") or ("", 0)
        self.local = f"{local[0]}:{local[1]}"

    def policy(self) -> Policy:
        return self.service.policy(self.tls_active)

    def shutdown(self) -> None:
        """Service stopping (SIGTERM): every client gets the protocol's goodbye (IMAP
        `* BYE`, POP3 `-ERR`) now. A relayed session's back-end connection is cut, which ends
        the relay; its final words are the goodbye (see _final_words), so a stop does not
        wait out the grace period for clients that would stay connected for hours."""
        self._stop_requested = True
        if self.relaying:
            if self._backend_writer is not None:
                self._backend_writer.transport.abort()  # no TLS close_notify wait
            return
        try:
            self.writer.write(self.core.goodbye("Server shutting down"))
        except (OSError, RuntimeError):
            pass
        self.writer.close()
        # A TLS close waits for the client's close_notify, which an idle client may never
        # send: end the session's read now instead of at the end of the grace period.
        self.reader.feed_eof()

    def _final_words(self, last_chunk: bytes) -> bytes:
        """What the client hears when the relay ends from the back-end side."""
        if not self._stop_requested:
            return self.service.backend_lost(last_chunk)
        # Only at a line end: after a partial line (a literal being sent) the goodbye would
        # become part of the data.
        if last_chunk and not last_chunk.endswith(b"\n"):
            return b""
        return self.core.goodbye("Server shutting down")

    def abort(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        if self._backend_writer is not None and not self._backend_writer.is_closing():
            self._backend_writer.close()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.user is not None:
                self.service.limits.logout(self.user)
            self.service.protocol_log.end(self.session_id)

    async def _run(self) -> None:
        greeting = self.core.greeting()
        self.writer.write(greeting)
        if self.service.protocol_log.enabled:
            self._log_line("OpenSession", "", None, None, 0, len(greeting), "")
        await self.writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout()
        while not self._stop_requested:
            event = self.core.next_event(self.policy())
            if event is None:
                data = await self._read(deadline - loop.time())
                if data is None:
                    return
                self.core.receive(data)
                continue
            # Only complete commands restart the idle clock, so a client dribbling bytes
            # cannot hold a pre-auth connection forever.
            deadline = loop.time() + self._idle_timeout()
            if isinstance(event, Send):
                self.writer.write(event.data)
                self._log_answer(event.data, None)
                await self.writer.drain()
                if event.close:
                    await linger_close(self.writer, self.reader)
                    return
            elif isinstance(event, StartTls):
                self._log_answer(event.data, None)
                await self._start_tls(event)
            elif isinstance(event, LoginRequest):
                if await self._login(event):
                    return

    def _idle_timeout(self) -> float:
        return self.service.live().idle_timeout

    async def _read(self, timeout: float) -> bytes | None:
        try:
            # asyncio.timeout, not wait_for: no task per read, and no loop iterations to
            # start it and to hand its result back (Python 3.11's wait_for has both).
            async with asyncio.timeout(max(timeout, 0.001)):
                data = await self.reader.read(65536)
        except TimeoutError:
            self.writer.write(self.core.goodbye("Connection timed out"))
            await linger_close(self.writer, self.reader)
            return None
        return data or None

    async def _start_tls(self, event: StartTls) -> None:
        self.writer.write(event.data)
        await self.writer.drain()
        # RFC 3501 11.1 / RFC 2595 3.1: nothing the client pipelined behind STARTTLS may be
        # executed after the handshake; drop it from both buffers.
        self.core.discard_buffer()
        take_buffered(self.reader)
        assert self.service.ssl_context is not None
        await self.writer.start_tls(self.service.ssl_context, ssl_handshake_timeout=30)
        self.tls_active = True

    # --- login ----------------------------------------------------------------------
    async def _login(self, request: LoginRequest) -> bool:
        """Handle one login attempt; True when the session is over (relayed or closed)."""
        service = self.service
        started = asyncio.get_running_loop().time()
        try:
            # The reason a mailbox may not use the protocol is told only to whoever proved
            # the password: before that every refusal is the same, so nobody learns from it
            # whether an account exists or what kind it is.
            result = await service.logins.login(
                service.ctx.settings,
                self.ip,
                request.user,
                request.password,
                lambda entry: may_use_protocol(entry, service.protocol),
            )
        except DirectoryUnavailable as exc:
            # The LDAP directory is down or too slow: a temporary failure (IMAP
            # [UNAVAILABLE], POP3 [SYS/TEMP]), not "wrong password", and no throttle score.
            self._log("directory-unavailable", request.user, str(exc))
            await self._answer(
                self.core.refuse(request, Refusal.UNAVAILABLE),
                request.user,
                started,
                "Msg=directory unavailable",
            )
            return False
        entry = result.entry
        if entry is None:
            return await self._failed(request, result.reason)
        ps = service.protocol_settings()
        if not service.limits.login(entry.name, ps.MaxConnectionsPerUser):
            self._log("login-refused", request.user, "too many connections for the user")
            await self._answer(
                self.core.refuse(request, Refusal.USER_LIMIT),
                request.user,
                started,
                f"Msg={Refusal.USER_LIMIT.value}",
            )
            return False
        self.user = entry.name
        if service.handoff is not None and entry.server_name.lower() == service.ctx.server.lower():
            handed = await hand_off(self, entry, request, started)
            if handed is not None:
                return handed
        try:
            local = self.writer.get_extra_info("sockname") or ("0.0.0.0", 0)
            backend_reader, backend_writer, caps = await asyncio.wait_for(
                service.open_backend(entry, self.peer, local), BACKEND_TIMEOUT
            )
        except (OSError, TimeoutError, BackendError, ssl.SSLError) as exc:
            service.limits.logout(entry.name)
            self.user = None
            if isinstance(exc, BackendRefused):
                self._log("backend-refused", entry.name, f"{entry.server_name}: {exc.response}")
                await self._answer(
                    self.core.refuse(request, Refusal.BACKEND_REFUSED, exc.response),
                    entry.name,
                    started,
                    f"Msg={Refusal.BACKEND_REFUSED.value} ({entry.server_name})",
                )
                return False
            self._log("backend-unavailable", entry.name, f"{entry.server_name}: {exc!r}")
            await self._answer(
                self.core.refuse(request, Refusal.UNAVAILABLE),
                entry.name,
                started,
                f"Msg={Refusal.UNAVAILABLE.value} ({entry.server_name})",
            )
            return False
        self._backend_writer = backend_writer
        self._log("login", entry.name, f"server={entry.server_name}")
        accepted = self.core.accept(request, caps)
        self.writer.write(accepted)
        self._log_answer(accepted, entry.name, started, f"Proxy={entry.server_name}")
        self.relaying = True
        pending = self.core.leftover() + take_buffered(self.reader)
        await self._relay(entry, pending, backend_reader, backend_writer)
        return True

    async def _relay(
        self,
        entry: Entry,
        pending: bytes,
        backend_reader: asyncio.StreamReader,
        backend_writer: asyncio.StreamWriter,
    ) -> None:
        stats = RelayStats()
        started = asyncio.get_running_loop().time()
        peer = backend_writer.get_extra_info("peername") or ("", 0)
        closed_by = "error"
        try:
            closed_by = await relay(
                self.writer,
                pending,
                backend_writer,
                take_buffered(backend_reader),
                self._final_words,
                stats,
                self.service.relay_transforms(),
            )
        finally:
            if self.service.protocol_log.enabled:
                self._log_line(
                    "proxy",
                    f"{entry.server_name} {peer[0]}:{peer[1]}",
                    entry.name,
                    started,
                    stats.to_backend,
                    stats.to_client,
                    f"R=OK;ClosedBy={closed_by}",
                )

    async def _failed(self, request: LoginRequest, reason: str | None) -> bool:
        self.failures += 1
        self._log("login-failed", request.user, reason or "bad user name or password")
        refusal = Refusal.POLICY if reason else Refusal.BAD_CREDENTIALS
        answer = self.core.refuse(request, refusal, reason or "")
        note = f"Msg={reason or refusal.value}"
        if self.failures >= self.service.max_logon_failures:
            self._log_answer(answer, request.user, None, note)
            await self._answer(answer + self.core.goodbye("Too many failed logins"))
            await linger_close(self.writer, self.reader)
            return True
        await self._answer(answer, request.user, None, note)
        return False

    async def _answer(
        self, data: bytes, user: str | None = None, started: float | None = None, note: str = ""
    ) -> None:
        self.writer.write(data)
        self._log_answer(data, user, started, note)
        await self.writer.drain()

    # --- protocol log -----------------------------------------------------------------
    def _log_answer(
        self, answer: bytes, user: str | None, started: float | None = None, note: str = ""
    ) -> None:
        """One protocol-log line for the command `answer` finishes (nothing when logging is
        off or the answer is a continuation); `note` is appended to the context."""
        if not self.service.protocol_log.enabled:
            return
        entry = self.core.log_entry(answer)
        if entry is None:
            return
        context = f"{entry.result};{note}" if note else entry.result
        self._log_line(
            entry.command, entry.parameters, user, started, entry.rqsize, len(answer), context
        )

    def _log_line(
        self,
        command: str,
        parameters: str,
        user: str | None,
        started: float | None,
        rqsize: int,
        rpsize: int,
        context: str,
    ) -> None:
        now = asyncio.get_running_loop().time()
        self.service.protocol_log.command(
            self.session_id,
            self.local,
            f"{self.peer[0]}:{self.peer[1]}",
            user,
            (now - started) * 1000 if started is not None else 0,
            rqsize,
            rpsize,
            command,
            parameters,
            context,
        )

    def _log(self, event: str, user: str, detail: str) -> None:
        level = logging.INFO if event == "login" else logging.WARNING
        self.log.log(
            level,
            "service=%s event=%s client=%s user=%r detail=%r",
            self.service.ctx.name,
            event,
            self.ip,
            user,
            detail,
        )


__all__ = [
    "BackendDone",
    "BackendError",
    "BackendLogin",
    "BackendRefused",
    "BackendSend",
    "FrontendService",
    "LogEntry",
    "LoginCore",
    "LoginRequest",
    "Policy",
    "Refusal",
    "Send",
    "Session",
    "StartTls",
]
