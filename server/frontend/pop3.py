"""MSExchangePOP3: the POP3 front end (login policy, then proxy to the back end).

Before login the front end answers CAPA, STLS, USER/PASS, AUTH PLAIN (initial response or
"+" continuation, RFC 5034), AUTH (mechanism list) and QUIT; anything else gets
"-ERR Command is not valid in this state." Lines longer than MaxCommandSize are refused
("-ERR Command line too long") and the rest of the line is dropped. CAPA lists what the back
end lists after login, less the login methods LoginType withholds. When the back end refuses
the hand-over with [IN-USE] (the maildrop is locked by another session) or [AUTH], the client
gets the back end's line as it is; other refusals become [SYS/TEMP].

LoginType, exactly ("TLS" = SSLBindings or after STLS):

=========================  ================================  ==========================
LoginType                  without TLS                       after TLS
=========================  ================================  ==========================
SecureLogin (default)      no USER, no SASL in CAPA;         USER/PASS and AUTH PLAIN
                           USER and AUTH -> -ERR [AUTH]
PlainTextAuthentication    AUTH PLAIN (SASL PLAIN in CAPA);  both
                           USER refused
PlainTextLogin             both                              both
=========================  ================================  ==========================
"""

from __future__ import annotations

from server.frontend.core import (
    BackendDone,
    BackendLogin,
    BackendRefused,
    BackendSend,
    FrontendService,
    LogEntry,
    LoginCore,
    LoginRequest,
    Policy,
    Refusal,
    Send,
    StartTls,
)
from server.frontend.imap import decode_plain
from server.protocols import sasl
from server.protocols.pop3.responses import Capabilities
from server.runtime.protocol_log import pop3_result
from server.settings.models import ProtocolSettings, Server, Settings

CRLF = b"\r\n"
_TLS_FIRST = (
    "-ERR [AUTH] Plain-text authentication is not allowed on an unencrypted "
    "connection; use STLS or the SSL port."
)
# Back-end refusals the client can act on (RFC 2449 IN-USE: try later; RFC 3206 AUTH: the
# credentials or the account are the problem); anything else is the server's trouble.
_PASSED_ON = ("-ERR [IN-USE]", "-ERR [AUTH]")


class Pop3LoginCore(LoginCore):
    def __init__(self, banner: str) -> None:
        self.banner = banner
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line
        self._user: str | None = None
        self._sasl = False  # AUTH PLAIN waiting for its client response
        self._logged = ("", "", 0)  # command, parameters, octets: for the protocol log

    # --- rendering ----------------------------------------------------------------------
    def capabilities(self, policy: Policy) -> list[str]:
        # The back end's own list (server.backend.pop3.server.CAPABILITIES) with the login methods
        # the policy allows here, so CAPA says the same before and after the hand-over.
        return Capabilities(
            sasl=("PLAIN",) if policy.sasl_plain_allowed else (),
            user=policy.clear_login_allowed,
            stls=not policy.tls_active and policy.tls_available,
        ).lines()

    def greeting(self) -> bytes:
        return f"+OK {self.banner}".encode() + CRLF

    def goodbye(self, reason: str) -> bytes:
        return f"-ERR {reason}.".encode() + CRLF

    def refuse_connection(self, reason: str) -> bytes:
        return f"-ERR [SYS/TEMP] {reason}.".encode() + CRLF

    def refuse(self, request: LoginRequest, refusal: Refusal, detail: str = "") -> bytes:
        if refusal is Refusal.BAD_CREDENTIALS:
            text = "[AUTH] Authentication failed."
        elif refusal is Refusal.POLICY:
            text = f"[SYS/PERM] Login refused: {detail}."
        elif refusal is Refusal.USER_LIMIT:
            text = "[SYS/TEMP] Too many connections for this user."
        elif refusal is Refusal.BACKEND_REFUSED and detail.upper().startswith(_PASSED_ON):
            return detail.encode("utf-8", "replace") + CRLF
        else:
            text = "[SYS/TEMP] The mailbox server is not available; try again later."
        return f"-ERR {text}".encode() + CRLF

    def accept(self, request: LoginRequest, capabilities: str | None) -> bytes:
        return b"+OK User successfully logged on." + CRLF

    # --- input --------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        self._buf += data

    def discard_buffer(self) -> None:
        self._buf.clear()
        self._discarding = False
        self._sasl = False

    def leftover(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def log_entry(self, answer: bytes) -> LogEntry | None:
        command, parameters, size = self._logged
        result = pop3_result(answer)
        if result is None or not command:
            return None
        return LogEntry(command, parameters, size, result)

    def next_event(self, policy: Policy) -> Send | StartTls | LoginRequest | None:
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > policy.max_command_size and not self._discarding:
                    self._logged = ("?", "(too long)", len(self._buf))
                    self._buf.clear()
                    self._discarding = True
                    self._sasl = False
                    return Send(b"-ERR Command line too long." + CRLF)
                if self._discarding:
                    self._buf.clear()
                return None
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > policy.max_command_size:
                self._logged = ("?", "(too long)", end + 1)
                self._sasl = False
                return Send(b"-ERR Command line too long." + CRLF)
            return self._line(line, policy)

    def _line(self, line: bytes, policy: Policy) -> Send | StartTls | LoginRequest:
        if self._sasl:
            self._sasl = False
            command, parameters, size = self._logged
            self._logged = (command, parameters, size + len(line) + 2)
            return self._sasl_response(line.strip())
        text = line.decode("utf-8", "replace")
        verb, _, rest = text.partition(" ")
        # Only the first word of PASS and AUTH arguments is logged: no secret in the log.
        logged = (
            ""
            if verb.upper() == "PASS"
            else rest
            if verb.upper() == "USER"
            else rest.partition(" ")[0]
        )
        self._logged = (verb.lower(), logged, len(line) + 2)
        verb = verb.upper()
        handler = getattr(self, f"_cmd_{verb.lower()}", None) if verb.isalpha() else None
        if handler is None:
            return Send(b"-ERR Command is not valid in this state." + CRLF)
        return handler(rest, policy)

    def _cmd_capa(self, rest: str, policy: Policy) -> Send:
        body = "".join(f"{cap}\r\n" for cap in self.capabilities(policy))
        return Send(f"+OK Capability list follows\r\n{body}.\r\n".encode())

    def _cmd_quit(self, rest: str, policy: Policy) -> Send:
        return Send(b"+OK Microsoft Exchange Server POP3 server signing off." + CRLF, close=True)

    def _cmd_noop(self, rest: str, policy: Policy) -> Send:
        return Send(b"-ERR Command is not valid in this state." + CRLF)

    def _cmd_stls(self, rest: str, policy: Policy) -> Send | StartTls:
        if policy.tls_active:
            return Send(b"-ERR Command not permitted when TLS active." + CRLF)
        if not policy.tls_available:
            return Send(b"-ERR STLS is not available." + CRLF)
        self._user = None
        return StartTls(b"+OK Begin TLS negotiation." + CRLF)

    def _cmd_user(self, rest: str, policy: Policy) -> Send:
        if not policy.clear_login_allowed:
            return Send(_TLS_FIRST.encode() + CRLF)
        if not rest.strip():
            return Send(b"-ERR USER needs a user name." + CRLF)
        self._user = rest.strip()
        return Send(b"+OK" + CRLF)

    def _cmd_pass(self, rest: str, policy: Policy) -> Send | LoginRequest:
        if not policy.clear_login_allowed:
            return Send(_TLS_FIRST.encode() + CRLF)
        if self._user is None:
            return Send(b"-ERR USER first." + CRLF)
        user, self._user = self._user, None
        return LoginRequest(user, rest, "PASS")  # RFC 1939: the password may hold spaces

    def _cmd_auth(self, rest: str, policy: Policy) -> Send | LoginRequest:
        mechanism, _, initial = rest.strip().partition(" ")
        if not mechanism:
            listed = "PLAIN\r\n" if policy.sasl_plain_allowed else ""
            return Send(f"+OK\r\n{listed}.\r\n".encode())
        if mechanism.upper() != "PLAIN":
            return Send(b"-ERR Unsupported authentication mechanism." + CRLF)
        if not policy.sasl_plain_allowed:
            return Send(_TLS_FIRST.encode() + CRLF)
        if not initial:
            self._sasl = True
            return Send(b"+ " + CRLF)
        return self._sasl_response(b"" if initial == "=" else initial.encode())

    def _sasl_response(self, response: bytes) -> Send | LoginRequest:
        if response == b"*":
            return Send(b"-ERR Authentication cancelled." + CRLF)
        try:
            decoded = decode_plain(sasl.decode_response(response))
        except sasl.SaslError:
            return Send(b"-ERR Invalid base64 response." + CRLF)
        if decoded is None:
            return Send(b"-ERR [AUTH] Authentication failed." + CRLF)
        return LoginRequest(decoded[0], decoded[1], "AUTH")


class Pop3BackendLogin(BackendLogin):
    """After the hand-over: the back end's greeting, already in the TRANSACTION state."""

    def on_line(self, line: bytes) -> BackendSend | BackendDone | None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("+OK"):
            return BackendDone(None)
        raise BackendRefused(f"hand-over refused: {text[:200]!r}", text[:510])


class Pop3FrontendService(FrontendService):
    protocol = "POP3"
    cert_kind = "POP"

    def protocol_settings(self, settings: Settings | None = None) -> ProtocolSettings:
        return (settings or self.ctx.settings).server(self.ctx.server).PopSettings

    def new_core(self, settings: ProtocolSettings) -> LoginCore:
        return Pop3LoginCore(settings.Banner)

    def backend_login(self) -> BackendLogin:
        return Pop3BackendLogin()

    def backend_ports(self, target: Server) -> tuple[int, int]:
        return target.PopBackEndPort, target.PopBackEndSSLPort


__all__ = ["Pop3BackendLogin", "Pop3FrontendService", "Pop3LoginCore"]
