"""MSExchangeFrontEndTransport: client SMTP submission (aiosmtpd) on the "Client Frontend"
receive connectors of this server (Settings.frontend_connectors), reference section 2.

Per connector, read at each new connection: Bindings, Fqdn (greeting, EHLO, Received),
Banner (the whole "220 ..." greeting; default "220 <Fqdn> Microsoft ESMTP MAIL service ready
at <date>"), AuthMechanism (Tls: STARTTLS offered; BasicAuth: AUTH PLAIN and LOGIN;
BasicAuthRequireTLS: AUTH only after STARTTLS), RequireTLS (nothing but EHLO/STARTTLS/QUIT
before TLS), MaxMessageSize (SIZE), MaxRecipientsPerMessage, MaxLogonFailures (then 421 and
close; 0 = no limit), PermissionGroups (without AnonymousUsers a client must authenticate).
EHLO also offers PIPELINING and ENHANCEDSTATUSCODES, as Exchange does. Also enforced per
connector: RemoteIPRanges (554 5.7.1 instead of the banner), MaxInboundConnection,
MaxInboundConnectionPerSource and its percentage (421 4.3.2), ConnectionTimeout and
ConnectionInactivityTimeout (421 4.4.2), ProtocolLoggingLevel (protocol_log.py).

Rules: an authenticated mailbox may send only as one of its own addresses (MAIL FROM and
every From: address), else "550 5.7.60 SendAs denied". Local recipients must exist (550
5.1.1); other domains need a SendConnector with SmartHosts whose AddressSpaces match (else
550 5.4.4 at RCPT time, so the client sees the error at once) and an authenticated client.
The header block must be plain RFC 5322 and the From addresses are read as both the email
package and the store's ENVELOPE read them (headers.py). DATA goes to its spool file as it
arrives, so a message being received costs disk, not memory; every accepted message is in the
spool (queue.py) before 250, and a recipient named twice gets one copy. delivery.py takes it
from there. No copy is saved to Sent Items (see delivery.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from server.directory import Directory, DirectoryUnavailable, Entry
from server.directory.throttle import LoginThrottle, account_key
from server.protocols import sasl
from server.runtime import tls
from server.runtime.listeners import bind_socket, endpoint_label
from server.runtime.service import Service, ServiceContext
from server.settings.models import ReceiveConnector, Settings
from server.settings.types import (
    AuthMechanism,
    MailboxType,
    PermissionGroup,
    ip_in_ranges,
)
from server.store import quota
from server.submission.delivery import Delivery, route
from server.submission.headers import HeaderError, check_header, sender_addresses
from server.submission.protocol_log import SmtpReceiveLog
from server.submission.queue import Recipient, Spool, SpoolFile

Key = tuple[str, int, str]  # address, port, connector name


def normalize_crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


MAX_HEADER = 256 * 1024  # a top-level header beyond this is refused (kept in memory to check)
WRITE_CHUNK = 64 * 1024  # message bytes buffered between writes to the spool file
# RFC 5321 section 4.1.4: EHLO names a domain or an address literal; we refuse only what
# could break the Received header (controls, white space, non-ASCII), not odd host names.
_HELO_NAME = re.compile(r"[\x21-\x7e]{1,255}")
# RFC 2821/5321 replies Exchange gives when it turns a connection away.
TOO_MANY_CONNECTIONS = (
    "421 4.3.2 The maximum number of concurrent connections has exceeded "
    "a limit, closing transmission channel"
)
TOO_MANY_FROM_SOURCE = (
    "421 4.3.2 The maximum number of concurrent connections from your "
    "address has exceeded a limit, closing transmission channel"
)
NOT_ALLOWED_FROM_HERE = "554 5.7.1 This server does not accept connections from your address"
GENERIC_ERROR = "451 4.3.0 Error processing the command; try again later"


# RFC 2034 section 4: with ENHANCEDSTATUSCODES advertised, every 2xx, 4xx and 5xx reply line
# but the greeting and the replies to HELO/EHLO carries an RFC 3463 code. aiosmtpd's own replies
# ("250 OK", "503 Error: need MAIL command" ...) have none: they get these (Postfix's choice),
# else the class's X.0.0.
_ENHANCED_BY_REPLY = {
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "555": "5.5.4",
}
_REPLY = re.compile(r"([245]\d\d)([ -]?)(.*)", re.S)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")


def with_enhanced_code(reply: str) -> str:
    """`reply` with an enhanced status code after its reply code, unless it has one already
    or is a 3xx (intermediate replies and AUTH challenges never get one)."""
    match = _REPLY.fullmatch(reply)
    if match is None or _ENHANCED.match(match.group(3)):
        return reply
    code, separator, text = match.groups()
    enhanced = _ENHANCED_BY_REPLY.get(code, f"{code[0]}.0.0")
    return f"{code}{separator or ' '}{enhanced}{' ' + text if text else ''}"


def certificate_name(connector: ReceiveConnector) -> str:
    """TlsCertificateName is "<I>issuer<S>subject"; the subject's CN names the certificate."""
    name = connector.TlsCertificateName or ""
    if "<S>" in name:
        name = name.split("<S>", 1)[1]
    match = re.search(r"CN=([^,]+)", name, re.I)
    return (match.group(1) if match else name).strip() or connector.Fqdn


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with Exchange's banner, and AUTH checked off the event loop."""

    def __init__(
        self,
        service: SubmissionService,
        connector_name: str,
        connector: ReceiveConnector,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        mechs = set(connector.AuthMechanism)
        self.service, self.connector_name, self.connector = service, connector_name, connector
        anonymous = PermissionGroup.AnonymousUsers in connector.PermissionGroups
        excluded = [] if AuthMechanism.BasicAuth in mechs else ["PLAIN", "LOGIN"]
        tls_on = AuthMechanism.Tls in mechs and ssl_context is not None
        super().__init__(
            Handler(service, self),
            data_size_limit=connector.MaxMessageSize.bytes,
            hostname=connector.Fqdn,
            tls_context=ssl_context if tls_on else None,
            require_starttls=connector.RequireTLS and tls_on,
            auth_required=not anonymous,
            auth_require_tls=AuthMechanism.BasicAuthRequireTLS in mechs,
            auth_exclude_mechanism=excluded,
            timeout=connector.ConnectionInactivityTimeout.total_seconds(),
        )
        self.banner = connector.Banner or (
            f"220 {connector.Fqdn} Microsoft ESMTP MAIL service ready at "
            f"{email.utils.formatdate(localtime=True)}"
        )
        self._greeted = False
        self._hello = False  # answering HELO/EHLO: those replies carry no enhanced codes
        self.logon_failures = 0
        self.mailbox: Entry | None = None  # the authenticated mailbox (reset by STARTTLS)
        self.refusal: str | None = None  # said instead of the banner, then the connection closes
        self.counted = False  # holds a place in the service's connection counts
        self.source = ""  # the client's address, once connected
        self.rcpt_keys: set[str] = set()  # this transaction's recipients, by resolved mailbox
        self._lifetime: asyncio.TimerHandle | None = None
        self._in_data = False
        self._in_auth = False
        self.log_session: str | None = None  # SmtpReceive log session id (ProtocolLoggingLevel)

    # --- connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # connection_made runs again after STARTTLS
        if first:
            peer = transport.get_extra_info("peername") or ("", 0)
            self.source = str(peer[0])
            self.refusal = self.service.admit(self)
            timeout = self.connector.ConnectionTimeout.total_seconds()
            self._lifetime = asyncio.get_running_loop().call_later(timeout, self._too_long)
            self.log_session = self.service.receive_log.open(self, transport)
        super().connection_made(transport)
        if first:
            reader = self._reader
            read_until = reader.readuntil

            async def logged_readuntil(separator: bytes = b"\n") -> bytes:
                line = await read_until(separator)
                if not self._in_data:
                    self.service.receive_log.received(self, line, secret=self._in_auth)
                return line

            reader.readuntil = logged_readuntil  # type: ignore[method-assign]

    def connection_lost(self, error: Exception | None) -> None:
        if self._lifetime is not None:
            self._lifetime.cancel()
            self._lifetime = None
        if self.log_session is not None:
            self.service.receive_log.closed(self)
            self.log_session = None
        super().connection_lost(error)

    def _too_long(self) -> None:
        """ConnectionTimeout: the connection's whole life is over, busy or not."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.service.ctx.log.info(
            "service=%s event=connection-timeout client=%s", self.service.ctx.name, self.source
        )
        line = f"421 4.4.2 {self.connector.Fqdn} Connection timed out"
        self.service.receive_log.sent(self, line)
        transport.write(line.encode() + b"\r\n")
        transport.close()

    def _timeout_cb(self) -> None:
        """ConnectionInactivityTimeout: say why before closing, as Exchange does."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            line = f"421 4.4.2 {self.connector.Fqdn} Connection timed out (inactivity)"
            self.service.receive_log.sent(self, line)
            transport.write(line.encode() + b"\r\n")
        super()._timeout_cb()

    async def push(self, status: Any) -> None:
        if not self._greeted:
            # aiosmtpd greets with "220 <hostname> <ident>"; Exchange's Banner is the whole line.
            self._greeted = True
            if self.refusal is not None:
                self.service.receive_log.sent(self, self.refusal)
                await super().push(self.refusal)
                if self.transport is not None:
                    self.transport.close()
                return
            status = self.banner
        elif isinstance(status, str) and not self._hello:
            status = with_enhanced_code(status)
        self.service.receive_log.sent(self, status)
        await super().push(status)

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self.rcpt_keys = set()

    async def challenge_auth(self, *args: Any, **kwargs: Any) -> Any:
        self._in_auth = True  # what the client answers is a secret: never logged
        try:
            return await super().challenge_auth(*args, **kwargs)
        finally:
            self._in_auth = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and not _HELO_NAME.fullmatch(hostname):
            await self.push("501 5.5.4 Invalid domain name")
            return
        await self._answer_hello(super().smtp_HELO(hostname))

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and not _HELO_NAME.fullmatch(hostname):
            await self.push("501 5.5.4 Invalid domain name")
            return
        await self._answer_hello(super().smtp_EHLO(hostname))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA, written to the spool as it arrives (aiosmtpd's keeps the whole message in
        memory). MaxMessageSize is counted as the bytes come; over it, the rest is read and
        dropped and the answer is 552 (RFC 5321 section 4.5.3.1.7)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        spooled = await asyncio.to_thread(self.service.spool.create)
        try:
            await self._receive_data(spooled)
        finally:
            # No await here: a connection torn down mid-DATA closes this coroutine.
            self._in_data = False
            spooled.discard()
            self._set_post_data_state()

    async def _receive_data(self, spooled: SpoolFile) -> None:
        assert self.envelope is not None and self.session is not None
        handler: Handler = self.event_handler
        spooled.write(handler.received_header(self.session, self.mailbox, spooled.id))
        await self.push("354 Start mail input; end with <CRLF>.<CRLF>")
        self._in_data = True
        limit = self.connector.MaxMessageSize.bytes or 0
        size, problem = 0, ""
        header = bytearray()
        in_header = True
        pending = bytearray()
        partial = False  # the previous read ended inside an over-long line
        loop = asyncio.get_running_loop()
        last_reset = loop.time()
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
                whole = True
            except asyncio.LimitOverrunError as exc:
                line = await self._reader.read(exc.consumed)
                whole = False
                problem = problem or "500 5.5.2 Line too long (see RFC 5321 section 4.5.3.1.6)"
            now = loop.time()
            if now - last_reset > 1.0:  # a client still sending is not inactive
                self._reset_timeout()
                last_reset = now
            if whole and not partial and line == b".\r\n":
                break
            continues, partial = partial, not whole
            if problem:
                continue
            if not continues and line.startswith(b"."):
                line = line[1:]  # RFC 5321 section 4.5.2
            line = normalize_crlf(line)
            size += len(line)
            if limit and size > limit:
                problem = "552 5.3.4 Message size exceeds fixed maximum message size"
                continue
            if in_header:
                if line == b"\r\n":
                    in_header = False
                elif len(header) + len(line) > MAX_HEADER:
                    problem = "552 5.3.4 Message header size exceeds the limit"
                    continue
                else:
                    header += line
            pending += line
            if len(pending) >= WRITE_CHUNK:
                await asyncio.to_thread(spooled.write, bytes(pending))
                pending.clear()
        if self.transport is None:
            return
        self._in_data = False
        self.service.receive_log.info(self, f"{size} bytes received")
        if problem:
            await self.push(problem)
            return
        if pending:
            await asyncio.to_thread(spooled.write, bytes(pending))
        await self.push(await handler.finish_data(self, bytes(header) + b"\r\n", spooled, size))

    async def _answer_hello(self, answer: Awaitable[None]) -> None:
        self._hello = True
        try:
            await answer
        finally:
            self._hello = False

    def _create_session(self) -> Session:
        self.mailbox = None  # a new session (connect, or after STARTTLS) starts unauthenticated
        return super()._create_session()

    async def _first_response(self, args: list[str], challenge: str) -> bytes | None:
        """The client's initial response (RFC 4954 section 4) or its answer to `challenge`;
        None when it aborted or sent bad base64 (answered already)."""
        if len(args) == 1:
            blob = await self.challenge_auth(challenge)
            return blob if isinstance(blob, bytes) else None
        try:
            return sasl.decode_response(args[1].encode("ascii", "replace"))
        except sasl.SaslError:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        blob = await self._first_response(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        try:
            plain = sasl.decode_plain(blob)
        except sasl.SaslError:
            plain = None
        if plain is None or plain.acts_as_other:
            await self.push("501 5.5.2 Malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(plain.authcid.encode(), plain.password.encode())

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._first_response(args, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        user = login.decode("utf-8", "replace")
        ip = str((self.session.peer or ("?",))[0]) if self.session else "?"
        service = self.service
        settings = service.ctx.settings
        account = account_key(settings, user)
        wait = service.throttle.delay(ip, account)
        if wait:
            await asyncio.sleep(wait)
        try:
            entry = await asyncio.to_thread(
                service.directory.verify, settings, user, password.decode("utf-8", "replace")
            )
        except DirectoryUnavailable as exc:
            # RFC 4954 section 6: 454 4.7.0, a temporary failure the client retries later.
            service.ctx.log.warning(
                "service=%s event=auth-unavailable client=%s user=%r %s",
                service.ctx.name,
                ip,
                user,
                exc,
            )
            await self.push("454 4.7.0 Temporary authentication failure")
            return AuthResult(success=False, handled=True)
        if entry is not None and entry.mailbox.Type is not MailboxType.Anonymous:
            service.throttle.succeeded(ip, entry.name)
            self.mailbox = entry
            service.ctx.log.info(
                "service=%s event=auth client=%s user=%r", service.ctx.name, ip, entry.name
            )
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        service.throttle.failed(ip, account)
        self.logon_failures += 1
        service.ctx.log.warning(
            "service=%s event=auth-failed client=%s user=%r", service.ctx.name, ip, user
        )
        limit = self.connector.MaxLogonFailures
        if limit and self.logon_failures >= limit:
            await self.push("421 4.7.0 Too many failed logons; closing the connection")
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)


class Handler:
    """aiosmtpd handler hooks: the sending rules, and spooling at DATA."""

    def __init__(self, service: SubmissionService, smtp: SubmissionSMTP) -> None:
        self.service, self.smtp = service, smtp

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler with this hook
        # PIPELINING (RFC 2920) is safe: aiosmtpd answers buffered commands one at a time, in
        # order, and drops plaintext pipelined after STARTTLS (RFC 3207 section 4.2).
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        # The details go to the log only: an answer naming the exception would tell a
        # client about the server's insides. 451: the client may well try again.
        self.service.ctx.log.exception(
            "service=%s event=error client=%s", self.service.ctx.name, self.smtp.source
        )
        return GENERIC_ERROR

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        box = self.smtp.mailbox
        if box is not None and address.lower() not in _addresses(box):
            return f"550 5.7.60 SMTP; Client does not have permissions to send as this sender <{address}>"
        if box is not None and not await asyncio.to_thread(self._may_send, box):
            return quota.SEND_REFUSED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        settings = self.service.ctx.settings
        found = settings.mailbox(address)
        if found is None and settings.Directory is not None and settings.Directory.ldap():
            try:
                hit = await asyncio.to_thread(self.service.directory.find, settings, address)
            except DirectoryUnavailable:
                return "451 4.4.3 The directory is unavailable; try again later"
            found = (hit.name, hit.mailbox) if hit is not None else None
        # The same mailbox named twice (or by two of its addresses) gets one copy.
        key = f"mailbox:{found[0].lower()}" if found else f"address:{address.lower()}"
        if key in self.smtp.rcpt_keys:
            return "250 2.1.5 Recipient OK"
        if len(envelope.rcpt_tos) >= self.smtp.connector.MaxRecipientsPerMessage:
            return "452 4.5.3 Too many recipients"
        if found is None:
            if _domain(address) in local_domains(settings):
                return f"550 5.1.1 User unknown <{address}>"
            if self.smtp.mailbox is None:
                return "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
            if route(settings, address) is None:
                return (
                    f"550 5.4.4 No send connector with a smart host serves "
                    f"{_domain(address)}; mail to other domains cannot be sent"
                )
        self.smtp.rcpt_keys.add(key)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def finish_data(
        self, smtp: SubmissionSMTP, header: bytes, spooled: SpoolFile, size: int
    ) -> str:
        """The sending rules on the received message (its header block in `header`, the
        whole of it in `spooled`), then the entry is committed: the answer to DATA."""
        envelope, box = smtp.envelope, smtp.mailbox
        assert envelope is not None
        try:
            check_header(header)
            senders = sender_addresses(header)
        except HeaderError as exc:
            return f"550 5.6.0 Message header not accepted: {exc}"
        if box is not None:
            own = _addresses(box)
            if any(a not in own for a in senders):
                return "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        settings = self.service.ctx.settings
        recipients = []
        for address in envelope.rcpt_tos:
            # No network here (the event loop): RCPT looked each one up a moment ago.
            found = self.service.directory.cached_entry(settings, address)
            if found is not None:
                recipients.append(Recipient(address, found.name, found.server_name))
            else:
                recipients.append(Recipient(address))
        try:
            entry = await asyncio.to_thread(
                spooled.commit, envelope.mail_from or "", recipients, box.name if box else None
            )
        except OSError as exc:
            self.service.ctx.log.error("event=spool-failed error=%r", exc)
            return "451 4.3.0 Could not queue the message; try again later"
        self.service.delivery.submit(entry)
        self.service.ctx.log.info(
            "service=%s event=queued id=%s from=%s rcpts=%d size=%d",
            self.service.ctx.name,
            entry.id,
            envelope.mail_from,
            len(recipients),
            spooled.size,
        )
        return f"250 2.6.0 Queued mail for delivery <{entry.id}>"

    def _may_send(self, box: Entry) -> bool:
        """Below its ProhibitSendQuota (Set-Mailbox), a mailbox may submit."""
        store = self.service.delivery.mailbox_store(box.server_name, box.name)
        return quota.may_send(store, self.service.ctx.settings.Mailboxes.get(box.name, box.mailbox))

    def received_header(self, session: Session, box: Entry | None, entry_id: str) -> bytes:
        peer = session.peer[0] if session.peer else "unknown"
        # EHLO names are checked (smtp_EHLO); this keeps a header line one line regardless.
        helo = re.sub(r"[^\x21-\x7e]", "?", session.host_name or "unknown")
        proto = "ESMTP" + ("S" if session.ssl else "") + ("A" if box else "")
        fqdn = self.smtp.connector.Fqdn
        text = (
            f"Received: from {helo} ([{peer}]) by {fqdn} with {proto} id {entry_id};\r\n"
            f"\t{email.utils.formatdate(localtime=True)}\r\n"
        )
        return text.encode()


def _addresses(entry: Entry) -> set[str]:
    return {a.lower() for a in entry.mailbox.addresses()}


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def local_domains(settings: Settings) -> set[str]:
    domains = {settings.Organization.Domain.lower()}
    for box in settings.Mailboxes.values():
        domains.update(_domain(a) for a in box.addresses())
    return domains


class SubmissionService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.directory = Directory(ctx.home)
        self.throttle = LoginThrottle()
        self.spool = Spool(ctx.home.queue / ctx.server)
        self.delivery = Delivery(ctx.home, self.spool, lambda: self.ctx.settings, ctx.log)
        self._servers: dict[Key, asyncio.Server] = {}
        self._contexts: dict[str, tuple[str, ssl.SSLContext]] = {}  # cert name -> (thumb, ctx)
        self._connections: set[SubmissionSMTP] = set()
        self._per_connector: dict[str, int] = {}
        self._per_source: dict[tuple[str, str], int] = {}
        self.receive_log = SmtpReceiveLog(
            ctx.home.logs / "FrontEnd" / "ProtocolLog" / "SmtpReceive", ctx.server
        )

    async def start(self) -> None:
        await self.delivery.start()
        await self._reconcile()
        self.ctx.log.info(
            "service=%s started endpoints=%s", self.ctx.name, ",".join(self.endpoints)
        )

    async def reload(self, old: Settings, new: Settings) -> None:
        await self._reconcile()

    async def reload_certificates(self) -> None:
        await self._reconcile()  # each connector's context gets its new chain, if any

    async def stop(self, grace: float) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        await self.delivery.stop()
        self.receive_log.close()

    def admit(self, smtp: SubmissionSMTP) -> str | None:
        """Count a new connection against its connector's limits; the reply that turns it
        away (said instead of the banner), or None. Released by `release`."""
        connector, name, source = smtp.connector, smtp.connector_name, smtp.source
        if not ip_in_ranges(source, list(connector.RemoteIPRanges)):
            self.ctx.log.warning(
                "service=%s event=refused client=%s connector=%r reason=RemoteIPRanges",
                self.ctx.name,
                source,
                name,
            )
            return NOT_ALLOWED_FROM_HERE
        total = self._per_connector.get(name, 0)
        from_source = self._per_source.get((name, source), 0)
        limit = connector.MaxInboundConnection
        per_source = connector.MaxInboundConnectionPerSource
        if limit is not None:  # Exchange: the percentage is of MaxInboundConnection
            share = max(1, limit * connector.MaxInboundConnectionPercentagePerSource // 100)
            per_source = min(per_source, share)
        if limit is not None and total >= limit:
            reply = TOO_MANY_CONNECTIONS
        elif from_source >= per_source:
            reply = TOO_MANY_FROM_SOURCE
        else:
            self._per_connector[name] = total + 1
            self._per_source[(name, source)] = from_source + 1
            smtp.counted = True
            return None
        self.ctx.log.warning(
            "service=%s event=refused client=%s connector=%r reason=%r",
            self.ctx.name,
            source,
            name,
            reply,
        )
        return reply

    def release(self, smtp: SubmissionSMTP) -> None:
        if not smtp.counted:
            return
        smtp.counted = False
        name, key = smtp.connector_name, (smtp.connector_name, smtp.source)
        for counts, k in ((self._per_connector, name), (self._per_source, key)):
            left = counts.get(k, 0) - 1  # type: ignore[call-overload]
            if left > 0:
                counts[k] = left  # type: ignore[index]
            else:
                counts.pop(k, None)  # type: ignore[call-overload]

    def status(self) -> dict[str, Any]:
        return {
            "connections": len(self._connections),
            "endpoints": self.endpoints,
            "queue": self.delivery.pending,
        }

    @property
    def endpoints(self) -> list[str]:
        return [endpoint_label(a, p) for a, p, _ in self._servers]

    def bound_port(self, connector: str) -> int:
        for (_, _, name), server in self._servers.items():
            if name == connector:
                return server.sockets[0].getsockname()[1]
        raise KeyError(connector)

    async def _ssl_context(self, connector: ReceiveConnector) -> ssl.SSLContext:
        name = certificate_name(connector)
        cert = await asyncio.to_thread(tls.ensure_certificate, self.ctx.home, "SMTP", name)
        known = self._contexts.get(name)
        if known is None:
            context = tls.server_context(cert)
            self._contexts[name] = (cert.thumbprint, context)
            return context
        if known[0] != cert.thumbprint:
            tls.reload_context(known[1], cert)
            self._contexts[name] = (cert.thumbprint, known[1])
        return known[1]

    async def _reconcile(self) -> None:
        connectors = self.ctx.settings.frontend_connectors(self.ctx.server)
        wanted: set[Key] = set()
        for name, connector in connectors.items():
            await self._ssl_context(connector)
            for ep in connector.Bindings:
                key = (ep.address, ep.port, name)
                wanted.add(key)
                if key not in self._servers:
                    self._servers[key] = await self._bind(key)
        for key in [k for k in self._servers if k not in wanted]:
            self._servers.pop(key).close()

    async def _bind(self, key: Key) -> asyncio.Server:
        address, port, name = key
        loop = asyncio.get_running_loop()
        return await loop.create_server(self._factory(name), sock=bind_socket(address, port))

    def _factory(self, name: str) -> Callable[[], SubmissionSMTP]:
        def make() -> SubmissionSMTP:
            # Settings are read per connection: a reload applies from the next one.
            connector = self.ctx.settings.ReceiveConnectors.get(name)
            if connector is None:  # removed by a reload while this listener closes
                connector = next(
                    iter(self.ctx.settings.frontend_connectors(self.ctx.server).values())
                )
            context = self._contexts.get(certificate_name(connector), (None, None))[1]
            smtp = SubmissionSMTP(self, name, connector, context)
            self._connections.add(smtp)
            original = smtp.connection_lost

            def lost(exc: Exception | None) -> None:
                self._connections.discard(smtp)
                self.release(smtp)
                original(exc)

            smtp.connection_lost = lost  # type: ignore[method-assign]
            return smtp

        return make
