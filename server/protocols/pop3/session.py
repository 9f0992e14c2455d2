"""The POP3 session state machine (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH), sans-IO.

The I/O layer feeds received bytes with `receive()` and then drains `next_action()` until it
returns None. Most actions are `Send` (bytes for the client). The others ask the I/O layer to
do something the core cannot do itself; until the I/O layer answers with the matching method,
`next_action()` returns None and later pipelined commands wait in order:

- `Authenticate` -> `auth_succeeded(maildrop)` or `auth_failed(text)`
- `Retrieve`     -> `retrieved(data)` (the message as sent) or `retrieve_failed(text)`
- `Update`       -> `updated(error)`; then `Close` follows
- `Close`        -> close the connection

Message numbers are fixed at login (RFC 1939 section 4): the maildrop is a list the I/O
layer builds from a store snapshot, in the order the server's MessageRetrievalSortOrder asks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from server.protocols import sasl
from server.protocols.pop3 import parser as p
from server.protocols.pop3.responses import (
    Capabilities,
    err,
    lines_response,
    multiline,
    ok,
    stuff,
    top_of,
)


class State(Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Read at every use through the session's settings callable, so a reload applies
    from the next command."""

    banner: str = "The Microsoft Exchange POP3 service is ready."
    max_command_size: int = 512  # octets of a command line without its CRLF
    capabilities: Capabilities = field(default_factory=Capabilities)
    user_pass: bool = False  # USER/PASS accepted here (the back end leaves them to front ends)
    server_name: str = "mailctl"


# --- the maildrop ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MaildropMessage:
    uid: int
    size: int  # what STAT and LIST report


@dataclass(frozen=True, slots=True)
class Maildrop:
    uidvalidity: int
    messages: tuple[MaildropMessage, ...]  # index 0 is message number 1


def build_maildrop(
    uidvalidity: int, entries: Iterable[tuple[int, int]], descending: bool = False
) -> Maildrop:
    """Number (uid, size) pairs: ascending UID order numbers the oldest message 1,
    descending numbers the newest 1 (PopSettings.MessageRetrievalSortOrder)."""
    ordered = sorted(entries, reverse=descending)
    return Maildrop(uidvalidity, tuple(MaildropMessage(uid, size) for uid, size in ordered))


def unique_id(uidvalidity: int, uid: int) -> str:
    """The UIDL of a message: Dovecot's default pop3_uidl_format `%08Xu%08Xv` (UID, then
    UIDVALIDITY, each as 8 uppercase hex digits). It is stable across sessions, follows
    IMAP (same UID, same UIDVALIDITY, so a UIDVALIDITY reset makes clients download again,
    as it does for IMAP clients), and a mailbox imported from Dovecot with its UIDs kept
    gives POP3 clients the same UIDLs they already know, so nothing is fetched twice."""
    return f"{uid:08X}{uidvalidity:08X}"


# --- actions -----------------------------------------------------------------------------
class Request:
    """The command a reply answers, for protocol logs: its keyword in lower case ("" for
    the greeting), its parameters as sent (the log redacts) and its size in octets. One is
    made for every command line and read only while a protocol log is on, so a line is
    split into keyword and parameters when first asked (`of_line`)."""

    __slots__ = ("_line", "_command", "_parameters", "size")

    def __init__(self, command: str = "", parameters: str = "", size: int = 0) -> None:
        self._line: bytes | None = None
        self._command = command
        self._parameters = parameters
        self.size = size

    @classmethod
    def of_line(cls, line: bytes) -> Request:
        request = cls.__new__(cls)
        request._line = line
        request.size = len(line)
        return request

    @property
    def command(self) -> str:
        self._split()
        return self._command

    @property
    def parameters(self) -> str:
        self._split()
        return self._parameters

    def _split(self) -> None:
        line = self._line
        if line is not None:
            keyword, _, rest = line[:512].decode("latin-1").partition(" ")
            self._command, self._parameters, self._line = keyword.lower(), rest, None

    def __repr__(self) -> str:
        return f"Request({self.command!r}, {self.parameters!r}, {self.size})"


GREETING = Request()


@dataclass(frozen=True, slots=True)
class Send:
    chunks: tuple[bytes, ...]
    request: Request = GREETING


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str  # "PLAIN" or "USER" (USER/PASS)
    authzid: str  # the mailbox to open ("" when the client named none)
    authcid: str
    password: str


@dataclass(frozen=True, slots=True)
class Retrieve:
    msg: int
    uid: int
    lines: int | None  # None: RETR, the whole message; else TOP msg lines


@dataclass(frozen=True, slots=True)
class Update:
    """Enter UPDATE (RFC 1939 section 6): remove these UIDs in one go, all or nothing, and
    mark the downloaded ones \\Seen."""

    delete: tuple[int, ...]
    seen: tuple[int, ...]


# The actions the session waits on the caller for (see _expect).
_Pending = TypeVar("_Pending", Authenticate, Retrieve, Update)


@dataclass(frozen=True, slots=True)
class Close:
    pass


Action = Send | Authenticate | Retrieve | Update | Close


def _request_of(event: p.Line | p.LineTooLong, sasl: bool) -> Request:
    if isinstance(event, p.LineTooLong):
        return Request("", "(too long)", event.length)
    if sasl:  # the SASL response line: credentials, never logged
        return Request("auth", "PLAIN *****", len(event.text))
    return Request.of_line(event.text)


class Pop3Session:
    def __init__(self, settings: Callable[[], SessionSettings]) -> None:
        self._settings = settings
        self.state = State.AUTHORIZATION
        self._reader = p.LineReader(self._reader_limit())
        self._lines: deque[p.Line | p.LineTooLong] = deque()
        self._out: deque[Action] = deque()
        self._waiting: Authenticate | Retrieve | Update | None = None
        self._sasl_pending = False  # "+ " sent, the next line is the SASL response
        self._user: str | None = None
        self.maildrop: Maildrop | None = None
        self.mailbox: str | None = None
        self._deleted: set[int] = set()  # message numbers
        # Derived from the maildrop and `_deleted`, built at first use and forgotten when
        # `_deleted` changes: (count, octets) and the bodies of LIST and UIDL.
        self._totals_cache: tuple[int, int] | None = None
        self._listings: dict[str, bytes] = {}
        self._retrieved: set[int] = set()
        self._request = GREETING  # the command being answered

    # --- I/O side ------------------------------------------------------------------------
    def greeting(self) -> bytes:
        return ok(self._settings().banner)

    def receive(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._reader.limit = self._reader_limit()
        self._lines.extend(self._reader.feed(data))

    def next_action(self) -> Action | None:
        while not self._out:
            if self._waiting is not None or self.state is State.CLOSED or not self._lines:
                return None
            self._handle_line(self._lines.popleft())
        action = self._out.popleft()
        if type(action) is Send:  # most actions: nothing to remember
            return action
        if isinstance(action, Authenticate | Retrieve | Update):
            self._waiting = action
        elif isinstance(action, Close):
            self.state = State.CLOSED
            self._lines.clear()
        return action

    @property
    def authenticated(self) -> bool:
        return self.state is not State.AUTHORIZATION

    def auth_succeeded(self, mailbox: str, maildrop: Maildrop) -> None:
        self._expect(Authenticate)
        self.state, self.mailbox, self.maildrop = State.TRANSACTION, mailbox, maildrop
        self._deletions_changed()
        count, octets = self._totals()
        self._reply(ok(f"{mailbox} has {count} messages ({octets} octets)"))

    def preauthenticated(self, mailbox: str, maildrop: Maildrop) -> bytes:
        """Start in the TRANSACTION state (the back end's hand-over already named and
        locked the maildrop); returns the greeting, which gives the maildrop's size."""
        self.state, self.mailbox, self.maildrop = State.TRANSACTION, mailbox, maildrop
        self._deletions_changed()
        count, octets = self._totals()
        return ok(f"{mailbox} has {count} messages ({octets} octets)")

    def auth_failed(self, text: str) -> None:
        self._expect(Authenticate)
        self._user = None
        self._reply(err(text))

    def retrieved(self, data: bytes, *, wire_ready: bool = False) -> None:
        """`data`: the message as sent. `wire_ready`: the caller checked that it is already
        a multi-line body (CRLF lines only, none starting with ".", ending in CRLF), so RETR
        sends it as it is, with no scan or copy here."""
        action = self._expect(Retrieve)
        if action.lines is None:
            self._retrieved.add(action.msg)
            first = b"+OK %d octets\r\n" % len(data)
            body = data if wire_ready else stuff(data)
        else:
            body = stuff(top_of(data, action.lines))
            first = ok("Top of message follows")
        self._reply(*multiline(first, body))

    def retrieve_failed(self, text: str) -> None:
        self._expect(Retrieve)
        self._reply(err(text))

    def updated(self, error: str | None) -> None:
        self._expect(Update)
        if error is None:
            left = len(self._messages()) - len(self._deleted)
            tail = "maildrop empty" if left == 0 else f"{left} messages left"
            self._reply(ok(f"{self._settings().server_name} signing off ({tail})"))
        else:
            self._reply(err(f"[SYS/TEMP] {error}"))
        self._out.append(Close())

    # --- internals -----------------------------------------------------------------------
    def _reader_limit(self) -> int:
        return max(self._settings().max_command_size, p.SASL_LINE_LIMIT)

    def _expect(self, kind: type[_Pending]) -> _Pending:
        action = self._waiting
        if not isinstance(action, kind):
            raise RuntimeError(f"no {kind.__name__} is pending")
        self._waiting = None
        return action

    def _messages(self) -> tuple[MaildropMessage, ...]:
        return self.maildrop.messages if self.maildrop else ()

    def _totals(self) -> tuple[int, int]:
        if self._totals_cache is None:
            count = octets = 0
            for number, message in enumerate(self._messages(), 1):
                if number not in self._deleted:
                    count += 1
                    octets += message.size
            self._totals_cache = count, octets
        return self._totals_cache

    def _deletions_changed(self) -> None:
        self._totals_cache = None
        self._listings.clear()

    def _reply(self, *chunks: bytes) -> None:
        self._out.append(Send(chunks, self._request))

    def _handle_line(self, event: p.Line | p.LineTooLong) -> None:
        limit = self._settings().max_command_size
        self._request = _request_of(event, self._sasl_pending)
        if self._sasl_pending:
            self._sasl_pending = False
            if isinstance(event, p.LineTooLong):
                self._reply(err("Authentication response too long"))
            else:
                self._sasl_response(event.text)
            return
        if isinstance(event, p.LineTooLong) or (
            len(event.text) > limit and not event.text[:5].upper().startswith(b"AUTH ")
        ):
            self._reply(err(f"Command line too long (at most {limit} octets)"))
            return
        command = p.parse_command(event.text)
        if isinstance(command, p.ParseError):
            self._reply(err(command.message))
            return
        self._dispatch(command)

    def _dispatch(self, command: p.Command) -> None:
        if isinstance(command, p.Capa):
            self._reply(*self._settings().capabilities.response())
        elif isinstance(command, p.Quit):
            self._quit()
        elif isinstance(command, p.Noop) and self.state is State.TRANSACTION:
            self._reply(ok())
        elif self.state is State.AUTHORIZATION:
            self._authorization(command)
        else:
            self._transaction(command)

    # --- AUTHORIZATION -------------------------------------------------------------------
    def _authorization(self, command: p.Command) -> None:
        match command:
            case p.Auth(mechanism=None):
                self._reply(
                    *lines_response(ok("Mechanisms follow"), self._settings().capabilities.sasl)
                )
            case p.Auth(mechanism=mechanism, initial=initial):
                self._auth(mechanism, initial)
            case p.User(name=name):
                self._user_command(name)
            case p.Pass(password=password):
                self._pass_command(password)
            case p.Apop():
                self._reply(err("APOP is not supported"))
            case p.Stls():
                self._reply(err("STLS is not available on this connection"))
            case _:
                self._reply(err("Not logged in yet: use AUTH first"))

    def _auth(self, mechanism: str | None, initial: str | None) -> None:
        if mechanism not in self._settings().capabilities.sasl:
            self._reply(err(f"Unsupported authentication mechanism {mechanism}"))
        elif initial is None:
            self._sasl_pending = True
            self._reply(b"+ \r\n")
        else:
            self._sasl_response(initial.encode("latin-1"))

    def _sasl_response(self, line: bytes) -> None:
        if line.strip() == b"*":  # RFC 5034 section 4: the client cancels
            self._reply(err("Authentication cancelled"))
            return
        try:
            plain = sasl.decode_plain(sasl.decode_response(line))
        except sasl.SaslError:
            self._reply(err("Invalid SASL PLAIN response"))
            return
        self._out.append(Authenticate("PLAIN", plain.authzid, plain.authcid, plain.password))

    def _user_command(self, name: str) -> None:
        if not self._settings().user_pass:
            self._reply(err("[AUTH] USER/PASS is not accepted here; use AUTH"))
            return
        self._user = name
        self._reply(ok("Send PASS"))

    def _pass_command(self, password: str) -> None:
        if not self._settings().user_pass:
            self._reply(err("[AUTH] USER/PASS is not accepted here; use AUTH"))
        elif self._user is None:
            self._reply(err("Send USER first"))
        else:
            self._out.append(Authenticate("USER", self._user, self._user, password))

    # --- TRANSACTION ---------------------------------------------------------------------
    def _transaction(self, command: p.Command) -> None:
        msg = getattr(command, "msg", None)
        if msg is not None and self._missing(msg):
            return
        match command:
            case p.Retr(msg=msg):  # first: most commands of a session are RETR
                self._out.append(Retrieve(msg, self._messages()[msg - 1].uid, None))
            case p.Stat():
                count, octets = self._totals()
                self._reply(ok(f"{count} {octets}"))
            case p.List(msg=None):
                self._list_all()
            case p.List(msg=int() as msg):
                self._reply(ok(f"{msg} {self._messages()[msg - 1].size}"))
            case p.Uidl(msg=None):
                self._uidl_all()
            case p.Uidl(msg=int() as msg):
                self._reply(ok(f"{msg} {self._unique_id(msg)}"))
            case p.Top(msg=msg, lines=lines):
                self._out.append(Retrieve(msg, self._messages()[msg - 1].uid, lines))
            case p.Dele(msg=msg):
                self._deleted.add(msg)
                self._deletions_changed()
                self._reply(ok(f"Message {msg} deleted"))
            case p.Rset():
                self._deleted.clear()
                self._deletions_changed()
                count, octets = self._totals()
                self._reply(ok(f"Maildrop has {count} messages ({octets} octets)"))
            case p.Auth() | p.User() | p.Pass() | p.Apop():
                self._reply(err("Already logged in"))
            case p.Stls():
                self._reply(err("STLS is only valid before login"))
            case _:
                self._reply(err("Command not valid in this state"))

    def _missing(self, msg: int) -> bool:
        """Reply -ERR (and say so) when `msg` names no message or a deleted one."""
        if msg > len(self._messages()):
            self._reply(err(f"No such message {msg}"))
        elif msg in self._deleted:
            self._reply(err(f"Message {msg} is already deleted"))
        else:
            return False
        return True

    def _unique_id(self, msg: int) -> str:
        assert self.maildrop is not None
        return unique_id(self.maildrop.uidvalidity, self.maildrop.messages[msg - 1].uid)

    def _list_all(self) -> None:
        count, octets = self._totals()
        self._reply(*multiline(ok(f"{count} messages ({octets} octets)"), self._listing("LIST")))

    def _uidl_all(self) -> None:
        self._reply(*multiline(ok("Unique-ID listing follows"), self._listing("UIDL")))

    def _listing(self, kind: str) -> bytes:
        """The lines of LIST or UIDL for the undeleted messages, built once per session
        (and again only after DELE or RSET)."""
        body = self._listings.get(kind)
        if body is None:
            deleted = self._deleted
            numbered = [(n, m) for n, m in enumerate(self._messages(), 1) if n not in deleted]
            if kind == "LIST":
                text = "".join([f"{n} {m.size}\r\n" for n, m in numbered])
            else:
                assert self.maildrop is not None
                validity = f"{self.maildrop.uidvalidity:08X}\r\n"
                text = "".join([f"{n} {m.uid:08X}{validity}" for n, m in numbered])
            body = self._listings[kind] = text.encode("ascii")
        return body

    # --- QUIT / UPDATE -------------------------------------------------------------------
    def _quit(self) -> None:
        if self.state is State.AUTHORIZATION:
            self._reply(ok(f"{self._settings().server_name} signing off"))
            self._out.append(Close())
            return
        self.state = State.UPDATE
        messages = self._messages()
        delete = tuple(sorted(messages[n - 1].uid for n in self._deleted))
        seen = tuple(sorted(messages[n - 1].uid for n in self._retrieved - self._deleted))
        self._out.append(Update(delete, seen))
