"""MSExchangeIMAP4: the IMAP4 front end (login policy, then proxy to the back end).

Before login the front end answers CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and
AUTHENTICATE PLAIN or LOGIN (with SASL-IR, RFC 4959, or "+" continuations); every other
command gets "BAD Command received in invalid state." as Exchange answers. AUTHENTICATE
LOGIN follows the same LoginType rule as PLAIN: both carry the password in the clear.

LoginType, exactly (reference section 1; "TLS" means implicit TLS on SSLBindings or after
STARTTLS):

=========================  =========================  ==================================
LoginType                  without TLS                after TLS
=========================  =========================  ==================================
SecureLogin (default)      LOGINDISABLED, no AUTH=    LOGIN and AUTHENTICATE PLAIN
                           PLAIN; LOGIN/AUTHENTICATE
                           -> NO [PRIVACYREQUIRED]
PlainTextAuthentication    AUTHENTICATE PLAIN allowed  both
                           (AUTH=PLAIN advertised);
                           LOGIN refused, LOGINDISABLED
PlainTextLogin             both                        both
=========================  =========================  ==================================

STARTTLS is advertised whenever the connection is not yet encrypted. After a good login the
client gets "<tag> OK [CAPABILITY ...] Logged in." carrying the back end's own capability list,
so what the client sees after login is exactly what the back end supports.
"""

from __future__ import annotations

import base64

from server.frontend.core import (
    BackendDone,
    BackendError,
    BackendLogin,
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
from server.frontend.imap_compress import ImapCompress, with_capability
from server.frontend.relay import Transforms
from server.protocols import sasl
from server.protocols.imap import requests as rq
from server.protocols.imap.reader import CommandReader
from server.runtime.protocol_log import imap_result
from server.settings.models import ImapSettings, ProtocolSettings, Server, Settings

CRLF = b"\r\n"
INVALID_STATE = "Command received in invalid state."


def decode_plain(response: bytes) -> tuple[str, str] | None:
    """SASL PLAIN (RFC 4616): (authcid, password), or None when malformed or asking to act
    as someone else (a client may not name an authzid other than itself)."""
    try:
        plain = sasl.decode_plain(response)
    except sasl.SaslError:
        return None
    return None if plain.acts_as_other else (plain.authcid, plain.password)


class ImapLoginCore(LoginCore):
    def __init__(self, banner: str) -> None:
        self.banner = banner
        self.reader = CommandReader()
        self._sasl_tag: str | None = None  # AUTHENTICATE waiting for its client response
        self._sasl_login = False  # that AUTHENTICATE is LOGIN (else PLAIN)
        self._sasl_user: str | None = None  # AUTHENTICATE LOGIN: the user name, once given
        # The command being answered, for the protocol log: name, parameters, tag, octets.
        self._logged: tuple[str, str, str | None] = ("", "", None)
        self._size = 0
        self._continued = False  # the reader asked for a literal: its command goes on

    # --- rendering --------------------------------------------------------------------
    def capabilities(self, policy: Policy) -> str:
        caps = ["IMAP4rev1", "IMAP4rev2", "SASL-IR", "LITERAL+", "ID"]
        if not policy.tls_active and policy.tls_available:
            caps.append("STARTTLS")
        if not policy.clear_login_allowed:
            caps.append("LOGINDISABLED")
        if policy.sasl_plain_allowed:
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
        return " ".join(caps)

    def greeting(self) -> bytes:
        return f"* OK {self.banner}".encode() + CRLF

    def goodbye(self, reason: str) -> bytes:
        return f"* BYE {reason}.".encode() + CRLF

    def refuse_connection(self, reason: str) -> bytes:
        return f"* BYE [UNAVAILABLE] {reason}.".encode() + CRLF

    def refuse(self, request: LoginRequest, refusal: Refusal, detail: str = "") -> bytes:
        tag = request.ref
        if refusal is Refusal.BAD_CREDENTIALS:
            text = "[AUTHENTICATIONFAILED] Authentication failed."
        elif refusal is Refusal.POLICY:
            text = f"[CONTACTADMIN] Login refused: {detail}."
        elif refusal is Refusal.USER_LIMIT:
            text = "[LIMIT] Too many connections for this user."
        else:
            text = "[UNAVAILABLE] The mailbox server is not available; try again later."
        return f"{tag} NO {text}".encode() + CRLF

    def accept(self, request: LoginRequest, capabilities: str | None) -> bytes:
        # COMPRESS is the front end's own (server/frontend/imap_compress.py).
        code = f"[CAPABILITY {with_capability(capabilities)}] " if capabilities else ""
        return f"{request.ref} OK {code}Logged in.".encode() + CRLF

    # --- input --------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        self.reader.feed(data)

    def discard_buffer(self) -> None:
        self.reader.discard_buffer()
        self.reader.line_mode = False
        self._sasl_tag = None
        self._sasl_login, self._sasl_user = False, None

    def leftover(self) -> bytes:
        return self.reader.take_buffer()  # what came in behind the login command

    def log_entry(self, answer: bytes) -> LogEntry | None:
        name, parameters, tag = self._logged
        result = imap_result(answer, tag)
        if result is None or not name:
            return None
        return LogEntry(name.lower(), parameters, self._size, result)

    def next_event(self, policy: Policy) -> Send | StartTls | LoginRequest | None:
        # Before login no literal may be larger than a whole command may be.
        self.reader.max_command_size = policy.max_command_size
        self.reader.max_literal_size = policy.max_command_size
        while True:
            before = self.reader.buffered
            event = self.reader.next_event()
            if event is None:
                if self.reader.closing:  # a huge refused LITERAL+ (parser.MAX_SKIP_SIZE)
                    return Send(self.goodbye("[TOOBIG] Literal too large"), close=True)
                return None
            self._note(event, before - self.reader.buffered)
            result = self._handle(event, policy)
            if result is not None:
                return result

    def _note(self, event: rq.Event, size: int) -> None:
        """Remember which command the next answer finishes (SASL responses and literal
        continuations belong to the command before them)."""
        if isinstance(event, rq.NeedContinuation):
            self._size = self._size + size if self._continued else size
            self._continued = True
            return
        if isinstance(event, rq.RawLine):
            self._size += size
            return
        self._size = self._size + size if self._continued else size
        self._continued = False
        if isinstance(event, rq.Command):
            args = event.args
            if isinstance(args, rq.Login):
                parameters = args.user  # never the password
            elif isinstance(args, rq.Authenticate):
                parameters = args.mechanism
            else:
                parameters = ""
            self._logged = (event.name, parameters, event.tag)
        else:
            self._logged = (getattr(event, "name", None) or "?", "", getattr(event, "tag", None))

    def _handle(self, event: rq.Event, policy: Policy) -> Send | StartTls | LoginRequest | None:
        if isinstance(event, rq.RawLine):
            return self._sasl_response(event.line)
        if isinstance(event, rq.NeedContinuation):
            return Send(f"+ {event.text}".encode() + CRLF)
        if isinstance(event, rq.CommandTooLong | rq.LiteralTooLarge):
            return Send(f"{event.tag or '*'} BAD [TOOBIG] Command too long.".encode() + CRLF)
        if isinstance(event, rq.ParseError):
            return Send(f"{event.tag or '*'} BAD {event.message}".encode() + CRLF)
        if isinstance(event, rq.BadCharset):
            return self._tagged(event.tag, "BAD", INVALID_STATE)
        assert isinstance(event, rq.Command)
        return self._command(event, policy)

    def _tagged(self, tag: str, status: str, text: str, untagged: str = "") -> Send:
        pre = f"* {untagged}\r\n" if untagged else ""
        return Send(f"{pre}{tag} {status} {text}".encode() + CRLF)

    def _command(self, cmd: rq.Command, policy: Policy) -> Send | StartTls | LoginRequest:
        args, tag = cmd.args, cmd.tag
        if isinstance(args, rq.Capability):
            return self._tagged(
                tag, "OK", "CAPABILITY completed.", f"CAPABILITY {self.capabilities(policy)}"
            )
        if isinstance(args, rq.Noop):
            return self._tagged(tag, "OK", "NOOP completed.")
        if isinstance(args, rq.Logout):
            data = self._tagged(tag, "OK", "LOGOUT completed.", "BYE Logging out.").data
            return Send(data, close=True)
        if isinstance(args, rq.Id):
            return self._tagged(tag, "OK", "ID completed.", 'ID ("name" "mailctl")')
        if isinstance(args, rq.Starttls):
            if policy.tls_active or not policy.tls_available:
                return self._tagged(tag, "BAD", "STARTTLS is not available now.")
            return StartTls(f"{tag} OK Begin TLS negotiation now.".encode() + CRLF)
        if isinstance(args, rq.Login):
            if not policy.clear_login_allowed:
                return self._tagged(
                    tag,
                    "NO",
                    "[PRIVACYREQUIRED] LOGIN is disabled on an "
                    "unencrypted connection; use STARTTLS or the SSL port.",
                )
            return LoginRequest(args.user, args.password, tag)
        if isinstance(args, rq.Authenticate):
            return self._authenticate(tag, args, policy)
        return self._tagged(tag, "BAD", INVALID_STATE)

    def _authenticate(self, tag: str, args: rq.Authenticate, policy: Policy) -> Send | LoginRequest:
        if args.mechanism.upper() not in ("PLAIN", "LOGIN"):
            return self._tagged(tag, "NO", "Unsupported authentication mechanism.")
        if not policy.sasl_plain_allowed:
            return self._tagged(
                tag,
                "NO",
                "[PRIVACYREQUIRED] Authentication is disabled on "
                "an unencrypted connection; use STARTTLS or the SSL port.",
            )
        if args.mechanism.upper() == "LOGIN":
            # SASL LOGIN (draft-murchison-sasl-login): "Username:", then "Password:"; an
            # initial response (RFC 4959) is the user name.
            self._sasl_login, self._sasl_user = True, None
            if args.initial_response is None:
                return self._challenge(tag, b"Username:")
            return self._login_step(tag, args.initial_response)
        if args.initial_response is None:
            self._sasl_tag = tag
            self.reader.line_mode = True
            return Send(b"+ " + CRLF)
        return self._plain(tag, args.initial_response)

    def _challenge(self, tag: str, text: bytes) -> Send:
        self._sasl_tag = tag
        self.reader.line_mode = True
        return Send(b"+ " + base64.b64encode(text) + CRLF)

    def _login_step(self, tag: str, response: bytes) -> Send | LoginRequest:
        if self._sasl_user is None:
            self._sasl_user = response.decode("utf-8", "replace")
            return self._challenge(tag, b"Password:")
        user, self._sasl_login, self._sasl_user = self._sasl_user, False, None
        if not user:
            return self._tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed.")
        return LoginRequest(user, response.decode("utf-8", "replace"), tag)

    def _sasl_response(self, line: bytes) -> Send | LoginRequest:
        tag, self._sasl_tag = self._sasl_tag or "*", None
        self.reader.line_mode = False
        login, self._sasl_login = self._sasl_login, False
        if line.strip() == b"*":
            self._sasl_user = None
            return self._tagged(tag, "BAD", "AUTHENTICATE cancelled.")
        try:
            response = sasl.decode_response(line)
        except sasl.SaslError:
            self._sasl_user = None
            return self._tagged(tag, "BAD", "Invalid base64 response.")
        if login:
            self._sasl_login = True
            return self._login_step(tag, response)
        return self._plain(tag, response)

    def _plain(self, tag: str, response: bytes) -> Send | LoginRequest:
        decoded = decode_plain(response)
        if decoded is None:
            return self._tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed.")
        return LoginRequest(decoded[0], decoded[1], tag)


class ImapBackendLogin(BackendLogin):
    """After the hand-over: the back end's PREAUTH greeting (RFC 3501 section 7.1.4) with
    the capabilities of the authenticated state, or a CAPABILITY command when it has none."""

    def __init__(self) -> None:
        self.state = "greeting"
        self.capabilities: str | None = None

    def on_line(self, line: bytes) -> BackendSend | BackendDone | None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if self.state == "greeting":
            if not text.upper().startswith("* PREAUTH"):
                raise BackendError(f"unexpected greeting {text[:80]!r}")
            rest = text[len("* PREAUTH") :].lstrip()
            if rest.upper().startswith("[CAPABILITY ") and "]" in rest:
                return BackendDone(rest[len("[CAPABILITY ") : rest.index("]")])
            self.state = "capability"
            return BackendSend(b"P1 CAPABILITY" + CRLF)
        if text.upper().startswith("* CAPABILITY "):
            self.capabilities = text[len("* CAPABILITY ") :]
            return None
        if text.startswith("P1 "):
            if self.capabilities is None or text[3:5].upper() != "OK":
                raise BackendError(f"CAPABILITY failed: {text[:200]!r}")
            return BackendDone(self.capabilities)
        return None


class ImapFrontendService(FrontendService):
    protocol = "IMAP4"
    cert_kind = "IMAP"

    def protocol_settings(self, settings: Settings | None = None) -> ProtocolSettings:
        return (settings or self.ctx.settings).server(self.ctx.server).ImapSettings

    def new_core(self, settings: ProtocolSettings) -> LoginCore:
        return ImapLoginCore(settings.Banner)

    def backend_login(self) -> BackendLogin:
        return ImapBackendLogin()

    def backend_ports(self, target: Server) -> tuple[int, int]:
        return target.ImapBackEndPort, target.ImapBackEndSSLPort

    def relay_transforms(self) -> Transforms:
        state = ImapCompress()
        return Transforms(state.from_client, state.from_backend, state.compress)

    def backend_lost(self, last_chunk: bytes) -> bytes:
        if b"* BYE" in last_chunk:
            return b""
        return b"* BYE [UNAVAILABLE] The connection to the mailbox server was lost." + CRLF


__all__ = [
    "ImapBackendLogin",
    "ImapFrontendService",
    "ImapLoginCore",
    "ImapSettings",
    "decode_plain",
]
