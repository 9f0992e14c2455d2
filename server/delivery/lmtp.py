"""LMTP (RFC 2033), the server's side, sans-IO: what MSExchangeDelivery speaks once a peer
has proved it belongs to the organization (service.py).

Feed bytes with `receive()`; it returns the bytes to send and, when a DATA section is
complete, the Transaction to deliver; after QUIT (or a command line with no end in
sight) `closed` is set and the caller closes once the bytes are sent. The caller delivers it (one outcome per accepted
recipient, in RCPT order) and passes the replies to `delivered()`, which returns them as the
per-recipient replies RFC 2033 section 4.2 requires; input that arrived meanwhile is
processed by the next `receive()` (b"" is fine).

Extensions (LHLO): PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, DSN (for ENVID, RFC 3461
section 4.4: the submission spool's entry id, which makes delivery idempotent per entry and
recipient).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_LINE = 2048  # a command line; RFC 5321 section 4.5.3.1.4 asks for 512 at least
MAX_RECIPIENTS = 1000
_PATH = re.compile(r"<([^<>\s]*)>(.*)", re.S)
_XTEXT = re.compile(r"\+([0-9A-F]{2})")


@dataclass
class Transaction:
    mail_from: str
    envid: str | None = None
    recipients: list[str] = field(default_factory=list)
    data: bytes = b""


def xtext_decode(value: str) -> str:
    """RFC 3461 section 4: "+XX" is the byte XX."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def _params(text: str) -> dict[str, str] | None:
    """ESMTP parameters after a path; None when one is malformed."""
    params: dict[str, str] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        params[key.upper()] = value
    return params


class LmtpSession:
    """One LMTP connection. `check_rcpt(address)` answers RCPT: a "250 ..." reply accepts
    the recipient, anything else is sent as the refusal."""

    def __init__(
        self, hostname: str, check_rcpt: Callable[[str], str], max_size: int = 256 * 1024 * 1024
    ) -> None:
        self.hostname, self.check_rcpt, self.max_size = hostname, check_rcpt, max_size
        self.greeted = False  # LHLO seen
        self.txn: Transaction | None = None
        self.pending: Transaction | None = None  # handed out, waiting for delivered()
        self._buffer = b""
        self._in_data = False
        self._data: list[bytes] = []
        self._size = 0
        self._too_big = False
        self._line_start = True  # the next DATA bytes begin a line
        self.closed = False

    def greeting(self) -> bytes:
        return f"220 {self.hostname} LMTP Mailbox Transport Delivery ready\r\n".encode()

    def receive(self, data: bytes) -> tuple[bytes, Transaction | None]:
        """Process input; stops at a completed DATA (returned) until delivered() is called."""
        if self.closed:
            return b"", None
        buf = self._buffer + data if self._buffer else data
        pos = 0  # lines are taken by position: one copy per line, not one of the rest
        out = bytearray()
        try:
            while self.pending is None and not self.closed:
                end = buf.find(b"\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_LINE:
                        if self._in_data:
                            # A long message line: keep what came; the rest continues it.
                            self._data_line(buf[pos:], complete=False)
                            pos = len(buf)
                        else:
                            self.closed = True
                            out += b"500 5.5.2 Line too long\r\n"
                    break
                line, pos = buf[pos : end + 1], end + 1
                if self._in_data:
                    txn = self._data_line(line)
                    if isinstance(txn, bytes):
                        out += txn
                    elif txn is not None:
                        return bytes(out), txn
                    continue
                if len(line) > MAX_LINE:
                    out += b"500 5.5.2 Line too long\r\n"
                    continue
                out += self._command(line.rstrip(b"\r\n"))
            return bytes(out), None
        finally:
            self._buffer = buf[pos:]

    def delivered(self, replies: list[str]) -> bytes:
        """The outcome of the pending transaction, one reply per accepted recipient."""
        txn = self.pending
        assert txn is not None and len(replies) == len(txn.recipients)
        self.pending = None
        self.txn = None
        return "".join(f"{r}\r\n" for r in replies).encode()

    # --- DATA ---------------------------------------------------------------------------
    def _data_line(self, line: bytes, complete: bool = True) -> Transaction | bytes | None:
        """One line of the message (`complete` False: the start of a line that goes on)."""
        at_start, self._line_start = self._line_start, complete
        if at_start and line in (b".\r\n", b".\n"):
            self._in_data = False
            txn = self.txn
            assert txn is not None
            data, self._data = b"".join(self._data), []
            if self._too_big:
                self._too_big = False
                self.txn = None
                # One reply per recipient here too (RFC 2033 section 4.2).
                return b"".join(b"552 5.3.4 Message too big for system\r\n" for _ in txn.recipients)
            txn.data = data
            self.pending = txn
            return txn
        if at_start and line.startswith(b"."):
            line = line[1:]  # RFC 5321 section 4.5.2: transparency
        self._size += len(line)
        if self._size > self.max_size:
            self._too_big = True
            self._data = []
        elif not self._too_big:
            self._data.append(line)
        return None

    # --- commands -----------------------------------------------------------------------
    def _command(self, raw: bytes) -> bytes:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return b"500 5.5.2 Invalid characters in the command\r\n"
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"_cmd_{verb}", None)
        if handler is None:
            if verb in ("HELO", "EHLO"):
                return b"500 5.5.1 This is LMTP: use LHLO (RFC 2033 section 4.1)\r\n"
            return b"500 5.5.1 Command unrecognized\r\n"
        reply: str = handler(arg.strip())
        return f"{reply}\r\n".encode()

    def _cmd_LHLO(self, arg: str) -> str:
        if not arg:
            return "501 5.5.4 Syntax: LHLO hostname"
        self.greeted = True
        self.txn = None
        return "\r\n".join(
            [
                f"250-{self.hostname}",
                "250-PIPELINING",
                "250-ENHANCEDSTATUSCODES",
                "250-8BITMIME",
                "250 DSN",
            ]
        )

    def _cmd_MAIL(self, arg: str) -> str:
        if not self.greeted:
            return "503 5.5.1 Send LHLO first"
        if self.txn is not None:
            return "503 5.5.1 Nested MAIL command"
        if not arg.upper().startswith("FROM:"):
            return "501 5.5.4 Syntax: MAIL FROM:<address>"
        match = _PATH.fullmatch(arg[5:].strip())
        params = _params(match.group(2)) if match else None
        if match is None or params is None:
            return "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"
        unknown = set(params) - {"ENVID", "RET", "BODY", "SIZE", "SMTPUTF8"}
        if unknown:
            return f"555 5.5.4 Unsupported parameter {sorted(unknown)[0]}"
        if "SIZE" in params and (
            not params["SIZE"].isdigit() or int(params["SIZE"]) > self.max_size
        ):
            return "552 5.3.4 Message too big for system"
        envid = params.get("ENVID")
        self.txn = Transaction(match.group(1), xtext_decode(envid) if envid else None)
        return "250 2.1.0 Sender OK"

    def _cmd_RCPT(self, arg: str) -> str:
        if self.txn is None:
            return "503 5.5.1 Need MAIL command"
        if not arg.upper().startswith("TO:"):
            return "501 5.5.4 Syntax: RCPT TO:<address>"
        match = _PATH.fullmatch(arg[3:].strip())
        params = _params(match.group(2)) if match else None
        if match is None or params is None or "@" not in match.group(1):
            return "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"
        if set(params) - {"NOTIFY", "ORCPT"}:
            return "555 5.5.4 Unsupported parameter"
        if len(self.txn.recipients) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        reply = self.check_rcpt(match.group(1))
        if reply.startswith("250"):
            self.txn.recipients.append(match.group(1))
        return reply

    def _cmd_DATA(self, arg: str) -> str:
        if self.txn is None:
            return "503 5.5.1 Need MAIL command"
        if not self.txn.recipients:
            return "503 5.5.1 No valid recipients"  # RFC 2033 section 4.2
        if arg:
            return "501 5.5.4 Syntax: DATA"
        self._in_data = True
        self._line_start = True
        self._size = 0
        return "354 Start mail input; end with <CRLF>.<CRLF>"

    def _cmd_RSET(self, arg: str) -> str:
        self.txn = None
        return "250 2.0.0 OK"

    def _cmd_NOOP(self, arg: str) -> str:
        return "250 2.0.0 OK"

    def _cmd_VRFY(self, arg: str) -> str:
        return "252 2.5.2 Cannot VRFY user"

    def _cmd_QUIT(self, arg: str) -> str:
        self.closed = True
        return f"221 2.0.0 {self.hostname} closing connection"
