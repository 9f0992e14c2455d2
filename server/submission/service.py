"""MSExchangeFrontEndTransport: client SMTP submission (aiosmtpd) on the "Client Frontend"
receive connectors of this server (Settings.frontend_connectors), reference section 2.

Per connector, read at each new connection: Bindings, Fqdn (greeting, EHLO, Received),
Banner (the whole "220 ..." greeting; default "220 <Fqdn> Microsoft ESMTP MAIL service ready
at <date>"), AuthMechanism (Tls: STARTTLS offered; BasicAuth: AUTH PLAIN and LOGIN;
BasicAuthRequireTLS: AUTH only after STARTTLS), RequireTLS (nothing but EHLO/STARTTLS/QUIT
before TLS), MaxMessageSize (SIZE), MaxRecipientsPerMessage, MaxLogonFailures (then 421 and
close; 0 = no limit), PermissionGroups (without AnonymousUsers a client must authenticate).
EHLO also offers PIPELINING and ENHANCEDSTATUSCODES, as Exchange does.

Rules: an authenticated mailbox may send only as one of its own addresses (MAIL FROM and
every From: address), else "550 5.7.60 SendAs denied". Local recipients must exist (550
5.1.1); other domains need a SendConnector with SmartHosts whose AddressSpaces match (else
550 5.4.4 at RCPT time, so the client sees the error at once) and an authenticated client.
Every accepted message is in the spool (queue.py) before 250; delivery.py takes it from
there. No copy is saved to Sent Items (see delivery.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import re
import ssl
from collections.abc import Awaitable, Callable
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from ..directory import Directory, Entry
from ..frontend.throttle import LoginThrottle
from ..runtime import tls
from ..runtime.listeners import bind_socket, endpoint_label
from ..runtime.service import Service, ServiceContext
from ..settings.models import ReceiveConnector, Settings
from ..settings.types import AuthMechanism, MailboxType, PermissionGroup
from ..store import quota
from .delivery import Delivery, route
from .queue import Recipient, Spool

Key = tuple[str, int, str]  # address, port, connector name


def normalize_crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


# RFC 2034 section 4: with ENHANCEDSTATUSCODES advertised, every 2xx, 4xx and 5xx reply line
# but the greeting and the replies to HELO/EHLO carries an RFC 3463 code. aiosmtpd's own replies
# ("250 OK", "503 Error: need MAIL command" ...) have none: they get these (Postfix's choice),
# else the class's X.0.0.
_ENHANCED_BY_REPLY = {
    "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "552": "5.3.4", "555": "5.5.4",
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

    def __init__(self, service: SubmissionService, connector_name: str,
                 connector: ReceiveConnector, ssl_context: ssl.SSLContext | None) -> None:
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

    async def push(self, status: Any) -> None:
        if not self._greeted:
            # aiosmtpd greets with "220 <hostname> <ident>"; Exchange's Banner is the whole line.
            self._greeted = True
            status = self.banner
        elif isinstance(status, str) and not self._hello:
            status = with_enhanced_code(status)
        await super().push(status)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self._answer_hello(super().smtp_HELO(hostname))

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._answer_hello(super().smtp_EHLO(hostname))

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
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        blob = await self._first_response(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3 or (parts[0] and parts[0].lower() != parts[1].lower()):
            await self.push("501 5.5.2 Malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(parts[1], parts[2])

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
        wait = service.throttle.delay(ip, user)
        if wait:
            await asyncio.sleep(wait)
        settings = service.ctx.settings
        entry = await asyncio.to_thread(
            service.directory.verify, settings, user, password.decode("utf-8", "replace"))
        if entry is not None and entry.mailbox.Type is not MailboxType.Anonymous:
            service.throttle.succeeded(ip, user)
            self.mailbox = entry
            service.ctx.log.info("service=%s event=auth client=%s user=%r",
                                 service.ctx.name, ip, entry.name)
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        service.throttle.failed(ip, user)
        self.logon_failures += 1
        service.ctx.log.warning("service=%s event=auth-failed client=%s user=%r",
                                service.ctx.name, ip, user)
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

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler with this hook
        # PIPELINING (RFC 2920) is safe: aiosmtpd answers buffered commands one at a time, in
        # order, and drops plaintext pipelined after STARTTLS (RFC 3207 section 4.2).
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        self.service.ctx.log.exception("service=%s event=error", self.service.ctx.name)
        # aiosmtpd's own answer, with RFC 3463's "other or undefined mail system status"
        return f"500 5.3.0 Error: ({error.__class__.__name__}) {error}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        box = self.smtp.mailbox
        if box is not None and address.lower() not in _addresses(box):
            return f"550 5.7.60 SMTP; Client does not have permissions to send as this sender <{address}>"
        if box is not None and not await asyncio.to_thread(self._may_send, box):
            return quota.SEND_REFUSED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.smtp.connector.MaxRecipientsPerMessage:
            return "452 4.5.3 Too many recipients"
        settings = self.service.ctx.settings
        if settings.mailbox(address) is None:
            if _domain(address) in local_domains(settings):
                return f"550 5.1.1 User unknown <{address}>"
            if self.smtp.mailbox is None:
                return "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
            if route(settings, address) is None:
                return (f"550 5.4.4 No send connector with a smart host serves "
                        f"{_domain(address)}; mail to other domains cannot be sent")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            raw = envelope.content
        box = self.smtp.mailbox
        if box is not None:
            headers = BytesHeaderParser().parsebytes(raw)
            senders = [a for _, a in email.utils.getaddresses(headers.get_all("From", []))]
            own = _addresses(box)
            if any(a.lower() not in own for a in senders):
                return "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        settings = self.service.ctx.settings
        recipients = []
        for address in envelope.rcpt_tos:
            found = self.service.directory.find(settings, address)
            if found is not None:
                recipients.append(Recipient(address, found.name, found.server_name))
            else:
                recipients.append(Recipient(address))
        message = self.received_header(session, box) + normalize_crlf(raw)
        try:
            entry = await asyncio.to_thread(
                self.service.spool.add, envelope.mail_from or "", recipients, message,
                box.name if box else None)
        except OSError as exc:
            self.service.ctx.log.error("event=spool-failed error=%r", exc)
            return "451 4.3.0 Could not queue the message; try again later"
        self.service.delivery.submit(entry)
        self.service.ctx.log.info(
            "service=%s event=queued id=%s from=%s rcpts=%d size=%d", self.service.ctx.name,
            entry.id, envelope.mail_from, len(recipients), len(message))
        return f"250 2.6.0 Queued mail for delivery <{entry.id}>"

    def _may_send(self, box: Entry) -> bool:
        """Below its ProhibitSendQuota (Set-Mailbox), a mailbox may submit."""
        store = self.service.delivery.mailbox_store(box.server_name, box.name)
        return quota.may_send(store, self.service.ctx.settings.Mailboxes.get(box.name, box.mailbox))

    def received_header(self, session: Session, box: Entry | None) -> bytes:
        peer = session.peer[0] if session.peer else "unknown"
        helo = session.host_name or "unknown"
        proto = "ESMTP" + ("S" if session.ssl else "") + ("A" if box else "")
        fqdn = self.smtp.connector.Fqdn
        text = (f"Received: from {helo} ([{peer}]) by {fqdn} with {proto};\r\n"
                f"\t{email.utils.formatdate(localtime=True)}\r\n")
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

    async def start(self) -> None:
        await self.delivery.start()
        await self._reconcile()
        self.ctx.log.info("service=%s started endpoints=%s", self.ctx.name,
                          ",".join(self.endpoints))

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

    def status(self) -> dict[str, Any]:
        return {"connections": len(self._connections), "endpoints": self.endpoints,
                "queue": self.delivery.pending}

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
                connector = next(iter(self.ctx.settings.frontend_connectors(self.ctx.server).values()))
            context = self._contexts.get(certificate_name(connector), (None, None))[1]
            smtp = SubmissionSMTP(self, name, connector, context)
            self._connections.add(smtp)
            original = smtp.connection_lost

            def lost(exc: Exception | None) -> None:
                self._connections.discard(smtp)
                original(exc)

            smtp.connection_lost = lost  # type: ignore[method-assign]
            return smtp

        return make
