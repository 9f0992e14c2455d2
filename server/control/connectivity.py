"""Test-ImapConnectivity / Test-PopConnectivity: a real client session through the front end.

Scenarios, each timed and reported the way Exchange does (CasServer, LocalSite, Scenario,
Result, Latency(MS), Error):
  1. Logon: connect to the server's front end (SSL binding for -ConnectionType Ssl, the
     plain binding with STARTTLS/STLS for Tls, no TLS at all for Plaintext), log in with the
     mailbox's credentials and open INBOX (IMAP) or the maildrop (POP3).
  2. Send (not with -LightMode): a message to the mailbox itself through the server's
     client-submission connector (STARTTLS + AUTH, as a mail client does).
  3. Retrieve (not with -LightMode): wait until that message is in INBOX through the front
     end, then delete it, so monitoring leaves no trace in the mailbox.
A failed step skips the ones after it. Plaintext logins fail under LoginType SecureLogin,
and that failure is the correct result of the test.
"""

from __future__ import annotations

import enum
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, cast

from server.runtime import tls
from server.settings.models import ReceiveConnector, Server, Settings
from server.settings.paths import Home
from server.settings.types import IPEndPoint

COLUMNS = ["CasServer", "LocalSite", "Scenario", "Result", "Latency(MS)", "Error"]
SUCCESS, FAILURE, SKIPPED = "Success", "Failure", "Skipped"
POLL_INTERVAL = 0.2  # how often retrieval looks again for the test message
RECENT_WINDOW = 50  # how many of the newest messages retrieval looks at


class ConnectionType(enum.Enum):
    Plaintext = "Plaintext"
    Ssl = "Ssl"
    Tls = "Tls"

    @classmethod
    def parse(cls, text: str) -> ConnectionType:
        for member in cls:
            if member.value.lower() == text.strip().lower():
                return member
        raise ValueError(f"{text!r} is not a connection type; allowed: Plaintext, Ssl, Tls")


@dataclass
class ScenarioResult:
    CasServer: str
    LocalSite: str
    Scenario: str
    Result: str
    Latency: int  # milliseconds
    Error: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "CasServer": self.CasServer,
            "LocalSite": self.LocalSite,
            "Scenario": self.Scenario,
            "Result": self.Result,
            "Latency(MS)": self.Latency,
            "Error": self.Error or None,
        }


@dataclass
class Probe:
    """What to test: `protocol` is "IMAP4" or "POP3"; `server` a server of the settings."""

    protocol: str
    server: str
    user: str
    password: str
    connection_type: ConnectionType = ConnectionType.Ssl
    port: int | None = None
    light_mode: bool = False
    trust_any_certificate: bool = False
    timeout: float = 30.0
    per_connection_timeout: float | None = None  # -PerConnectionTimeout: cap of each connection
    host: str | None = None  # address to connect to; default: the binding's (wildcard -> loopback)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


class StepFailed(Exception):
    pass


def connect_address(ep: IPEndPoint) -> str:
    """Where a local client reaches a binding: wildcard addresses mean this host."""
    if ep.address == "0.0.0.0":
        return "127.0.0.1"
    if ep.address == "::":
        return "::1"
    return ep.address


def client_tls(home: Home, trust_any: bool) -> ssl.SSLContext:
    """Public CAs and the installation's private CA; or no checks with -TrustAnySSLCertificate."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust_any:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(tls.ensure_ca(home)))
    return ctx


def describe(exc: BaseException, where: str) -> str:
    """One useful sentence for the Error column."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or exc
        return (
            f"the certificate of {where} is not trusted ({reason}); "
            "use -TrustAnySSLCertificate to test anyway"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the service running?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from {where} in time"
    if isinstance(exc, imaplib.IMAP4.error | poplib.error_proto | smtplib.SMTPException):
        text = exc.args[0] if exc.args else str(exc)
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"{exc.smtp_code} {exc.smtp_error!r}"
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return f"{where} answered: {str(text).strip()}"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}"
    return f"{where}: {exc}"


class Tester:
    def __init__(self, home: Home, settings: Settings, probe: Probe) -> None:
        self.home, self.settings, self.probe = home, settings, probe
        self.server_name = settings.server_name(probe.server)
        self.server: Server = settings.Servers[self.server_name]
        self.deadline = probe.clock() + probe.timeout
        self.context = client_tls(home, probe.trust_any_certificate)
        self.token = uuid.uuid4().hex[:16]

    # --- plumbing ------------------------------------------------------------------
    def remaining(self) -> float:
        left = self.deadline - self.probe.clock()
        if left <= 0:
            raise StepFailed(f"the test ran out of time ({self.probe.timeout:g} s)")
        if self.probe.per_connection_timeout:
            return min(left, self.probe.per_connection_timeout)
        return left

    def endpoint(self) -> tuple[str, int]:
        ps = self.server.ImapSettings if self.probe.protocol == "IMAP4" else self.server.PopSettings
        bindings = (
            ps.SSLBindings
            if self.probe.connection_type is ConnectionType.Ssl
            else ps.UnencryptedOrTLSBindings
        )
        if not bindings and not (self.probe.host and self.probe.port):
            kind = (
                "SSLBindings"
                if self.probe.connection_type is ConnectionType.Ssl
                else "UnencryptedOrTLSBindings"
            )
            raise StepFailed(f"{self.server_name} has no {self.probe.protocol} {kind}")
        host = self.probe.host or connect_address(bindings[0])
        return host, self.probe.port or bindings[0].port

    def run_step(self, name: str, step: Callable[[], None]) -> ScenarioResult:
        start = self.probe.clock()
        try:
            step()
        except StepFailed as exc:
            return self.result(name, FAILURE, start, str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure is a result, not a crash
            return self.result(name, FAILURE, start, describe(exc, self.where))
        return self.result(name, SUCCESS, start)

    def result(
        self, name: str, result: str, start: float | None, error: str = ""
    ) -> ScenarioResult:
        latency = -1 if start is None else round((self.probe.clock() - start) * 1000)
        return ScenarioResult(self.server_name, self.server.Site, name, result, latency, error)

    where = "the server"

    # --- the scenarios -------------------------------------------------------------
    def run(self) -> list[ScenarioResult]:
        label = "IMAP4" if self.probe.protocol == "IMAP4" else "POP3"
        steps: list[tuple[str, Callable[[], None]]] = [(f"{label} logon", self.logon)]
        if not self.probe.light_mode:
            steps += [("SMTP send", self.send), (f"{label} retrieve", self.retrieve)]
        results: list[ScenarioResult] = []
        for name, step in steps:
            if results and results[-1].Result != SUCCESS:
                results.append(self.result(name, SKIPPED, None, "an earlier step failed"))
                continue
            results.append(self.run_step(name, step))
        return results

    def logon(self) -> None:
        session = self.open_session()
        self.close_session(session)

    def sender_address(self) -> str:
        """The mailbox's own address (a login name alone is not one); looked up in the
        directory, LDAP included, and the name as given when it cannot be."""
        from server.directory import DirectoryUnavailable, find_entry

        try:
            entry = find_entry(self.settings, self.probe.user, self.home)
        except DirectoryUnavailable:
            entry = None
        return entry.mailbox.PrimarySmtpAddress if entry else self.probe.user

    def send(self) -> None:
        name, conn = self.submission_connector()
        ep = conn.Bindings[0]
        host = self.probe.host or connect_address(ep)
        self.where = f"{name} ({host}:{ep.port})"
        address = self.sender_address()
        msg = EmailMessage()
        msg["From"] = msg["To"] = address
        msg["Subject"] = f"Test-{self.probe.protocol}Connectivity {self.token}"
        msg["Message-ID"] = make_msgid(domain=self.server.Fqdn)
        msg.set_content("mailctl connectivity test; it deletes itself when read.\n")
        with smtplib.SMTP(host, ep.port, timeout=self.remaining()) as client:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=_hostname_context(self.context, conn.Fqdn))
                client.ehlo()
            client.login(self.probe.user, self.probe.password)
            client.send_message(msg)

    def retrieve(self) -> None:
        while True:
            session = self.open_session()
            try:
                if self.take_test_message(session):
                    return
            finally:
                self.close_session(session)
            if self.remaining() < POLL_INTERVAL:
                raise StepFailed(
                    f"the test message did not arrive within {self.probe.timeout:g} s "
                    "(is MSExchangeFrontEndTransport delivering?)"
                )
            time.sleep(POLL_INTERVAL)

    def submission_connector(self) -> tuple[str, ReceiveConnector]:
        connectors = {
            n: c
            for n, c in self.settings.frontend_connectors(self.server_name).items()
            if c.Bindings
        }
        if not connectors:
            raise StepFailed(f"{self.server_name} has no enabled client submission connector")
        preferred = f"Client Frontend {self.server_name}".lower()
        name = next((n for n in connectors if n.lower() == preferred), next(iter(connectors)))
        return name, connectors[name]

    # --- protocol sessions ---------------------------------------------------------
    def open_session(self) -> imaplib.IMAP4 | poplib.POP3:
        host, port = self.endpoint()
        self.where = f"{self.server_name} ({host}:{port})"
        if self.probe.protocol == "IMAP4":
            return self.imap_session(host, port)
        return self.pop_session(host, port)

    def close_session(self, session: imaplib.IMAP4 | poplib.POP3) -> None:
        try:
            if isinstance(session, imaplib.IMAP4):
                session.logout()
            else:
                session.quit()
        except (OSError, imaplib.IMAP4.error, poplib.error_proto):
            pass

    def connect(
        self,
        host: str,
        port: int,
        secure: type[_ImapSsl] | type[_PopSsl],
        plain: type[imaplib.IMAP4] | type[poplib.POP3],
    ) -> Any:
        """A client of class `secure` (implicit TLS) or `plain` (upgraded with STARTTLS/STLS
        for -ConnectionType Tls), checking the certificate against the server's FQDN."""
        kind = self.probe.connection_type
        fqdn = self.server.Fqdn
        if kind is ConnectionType.Ssl:
            return secure(host, port, self.context, fqdn, self.remaining())
        client = plain(host, port, timeout=self.remaining())
        if kind is ConnectionType.Tls:
            upgrade = client.starttls if isinstance(client, imaplib.IMAP4) else client.stls
            upgrade(_hostname_context(self.context, fqdn))
        return client

    def imap_session(self, host: str, port: int) -> imaplib.IMAP4:
        client: imaplib.IMAP4 = self.connect(host, port, _ImapSsl, imaplib.IMAP4)
        try:
            client.login(self.probe.user, self.probe.password)
            typ, data = client.select("INBOX")
            if typ != "OK":
                raise StepFailed(f"{self.where} could not open INBOX: {data!r}")
        except BaseException:
            client.shutdown()
            raise
        return client

    def pop_session(self, host: str, port: int) -> poplib.POP3:
        client: poplib.POP3 = self.connect(host, port, _PopSsl, poplib.POP3)
        try:
            client.user(self.probe.user)
            client.pass_(self.probe.password)
            client.stat()
        except BaseException:
            client.close()
            raise
        return client

    def take_test_message(self, session: imaplib.IMAP4 | poplib.POP3) -> bool:
        """Delete the test message if it is there; True when it was."""
        if isinstance(session, imaplib.IMAP4):
            return self.take_imap_message(session)
        count, _ = session.stat()
        for number in range(count, 0, -1):  # newest first: it was just sent
            _, lines, _ = session.top(number, 0)
            if any(self.token.encode() in line for line in lines):
                session.dele(number)
                return True
        return False

    def take_imap_message(self, session: imaplib.IMAP4) -> bool:
        # The newest few messages' subjects, not SEARCH: cheap in a big mailbox, and only the
        # test message is expunged (UID EXPUNGE) so the user's own \Deleted ones stay.
        typ, data = session.select("INBOX")
        count = int(data[0] or 0) if typ == "OK" else 0
        if not count:
            return False
        typ, data = session.fetch(
            f"{max(1, count - RECENT_WINDOW + 1)}:{count}",
            "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        )
        uids = [
            match.group(1).decode()
            for item in data
            if isinstance(item, tuple) and self.token.encode() in item[1]
            if (match := re.search(rb"UID (\d+)", item[0]))
        ]
        if not uids:
            return False
        session.uid("STORE", ",".join(uids), "+FLAGS.SILENT", r"(\Deleted)")
        typ, caps = session.capability()  # after login: the back end's, not the front end's
        if typ == "OK" and caps and b"UIDPLUS" in caps[0].upper().split():
            session.uid("EXPUNGE", ",".join(uids))
        else:
            session.expunge()
        return True


def _hostname_context(context: ssl.SSLContext, fqdn: str) -> ssl.SSLContext:
    # imaplib/poplib derive server_hostname from the host they dialled (127.0.0.1); the
    # certificate names the server's FQDN, so wrap with that name instead.
    # A proxy that forwards every other attribute to the real context: an SSLContext to
    # whoever uses it, though not a subclass.
    return cast(ssl.SSLContext, _NamedContext(context, fqdn))


class _NamedContext:
    """An SSLContext stand-in whose wrap_socket always uses `fqdn` as server_hostname."""

    def __init__(self, context: ssl.SSLContext, fqdn: str) -> None:
        self._context, self._fqdn = context, fqdn

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self._fqdn if self._context.check_hostname else None
        return self._context.wrap_socket(sock, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _ImapSsl(imaplib.IMAP4_SSL):
    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, fqdn: str, timeout: float
    ) -> None:
        super().__init__(
            host,
            port,
            ssl_context=_hostname_context(context, fqdn),  # type: ignore[arg-type]
            timeout=timeout,
        )


class _PopSsl(poplib.POP3_SSL):
    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, fqdn: str, timeout: float
    ) -> None:
        super().__init__(
            host,
            port,
            context=_hostname_context(context, fqdn),  # type: ignore[arg-type]
            timeout=timeout,
        )


def test_connectivity(home: Home, settings: Settings, probe: Probe) -> list[ScenarioResult]:
    """Run the scenarios; never raises for a failed check (that is a Failure row)."""
    return Tester(home, settings, probe).run()


test_connectivity.__test__ = False  # pyright: ignore[reportFunctionMemberAccess] - for pytest
