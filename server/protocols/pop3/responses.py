"""POP3 response framing: status lines, multi-line responses, byte-stuffing, CAPA.

Multi-line bodies are built with a few C-level bytes operations per response, never a
Python loop per line: a message of any size costs one `replace` for the dot-stuffing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CRLF = b"\r\n"
TERMINATOR = b".\r\n"
# RFC 1939 section 3: a response line is at most 512 octets with its CRLF.
MAX_RESPONSE_LINE = 512


def ok(text: str = "") -> bytes:
    return _status(b"+OK", text)


def err(text: str) -> bytes:
    return _status(b"-ERR", text)


def _status(indicator: bytes, text: str) -> bytes:
    # Replies echo client data (e.g. names); a CR or LF in it must not split the line.
    body = text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    line = indicator + b" " + body if body else indicator
    return line[: MAX_RESPONSE_LINE - 2] + CRLF


def stuff(data: bytes | memoryview) -> bytes:
    """`data` as a multi-line body: CRLF line ends, every line starting with "." doubled
    (RFC 1939 section 3), ending in CRLF (without the terminating ".")."""
    data = bytes(data)
    if not data:
        return b""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    if not stuffed.endswith(CRLF):
        stuffed += CRLF
    return stuffed


def multiline(first: bytes, body: bytes) -> tuple[bytes, ...]:
    """Chunks of a multi-line response: the status line, the stuffed body, the ".".
    `body` is already stuffed (see `stuff`) or is made of lines that never start with "."."""
    return (first, body, TERMINATOR) if body else (first, TERMINATOR)


def lines_response(first: bytes, lines: Iterable[str]) -> tuple[bytes, ...]:
    """A multi-line response of short generated lines (LIST, UIDL, CAPA)."""
    body = "".join(f"{line}\r\n" for line in lines).encode("ascii")
    return multiline(first, body)


def top_of(message: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` body lines (RFC 1939 TOP).
    A message without a blank line is all header and is sent whole."""
    split = message.find(b"\r\n\r\n")
    if split < 0:
        return message
    end = split + 4
    for _ in range(lines):
        nl = message.find(b"\n", end)
        if nl < 0:
            return message
        end = nl + 1
    return message[:end]


@dataclass(frozen=True)
class Capabilities:
    """What CAPA lists (RFC 2449 section 6). Capabilities a client may use before login are
    listed in both states (RFC 2449 section 5), so the back end, which only sees the client
    after the front end's login, repeats what the front end offers."""

    sasl: tuple[str, ...] = ("PLAIN",)
    user: bool = True
    stls: bool = False
    login_delay: int = 0
    expire: str = "NEVER"
    implementation: str = "mailctl"

    def lines(self) -> list[str]:
        caps = ["TOP", "UIDL"]
        if self.user:
            caps.append("USER")
        if self.sasl:
            caps.append("SASL " + " ".join(self.sasl))
        if self.stls:
            caps.append("STLS")
        caps += [
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            f"EXPIRE {self.expire}",
            f"LOGIN-DELAY {self.login_delay}",
            f"IMPLEMENTATION {self.implementation}",
        ]
        return caps

    def response(self) -> tuple[bytes, ...]:
        return lines_response(ok("Capability list follows"), self.lines())
