"""POP3 command lines, sans-IO: bytes in, typed commands out.

`LineReader` splits the byte stream into lines and turns an over-long line into one
`LineTooLong` event (the rest of that line is discarded, the session goes on).
`parse_command` turns one line into a typed command or a `ParseError` whose text is fit to
send after "-ERR ". Keywords are case-insensitive (RFC 1939 section 3); arguments are
kept as sent. Shared by the back end and the front end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

# RFC 1939 section 3: arguments are at most 40 characters.
MAX_ARGUMENT = 40
# SASL lines (AUTH with an initial response, continuation responses) may be longer than a
# small MaxCommandSize; the reader buffers up to this much before giving up on a line.
SASL_LINE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Line:
    text: bytes  # without the line end


@dataclass(frozen=True, slots=True)
class LineTooLong:
    length: int  # octets seen before the reader gave up (at least the limit)


class LineReader:
    """Incremental CRLF (or bare LF) line splitter with a length limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Line | LineTooLong]:
        if data and not self._buffer and not self._discarding and data.find(b"\n") == len(data) - 1:
            # One whole line, as a client that waits for each answer sends it: no buffer.
            stop = len(data) - 2 if data.endswith(b"\r\n") else len(data) - 1
            return [Line(data[:stop]) if stop <= self.limit else LineTooLong(stop)]
        self._buffer += data
        events: list[Line | LineTooLong] = []
        start = 0
        buf = self._buffer
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                stop = end - 1 if end > start and buf[end - 1] == 0x0D else end
                if stop - start > self.limit:
                    events.append(LineTooLong(stop - start))
                else:
                    events.append(Line(bytes(buf[start:stop])))
            start = end + 1
        del buf[:start]
        if len(buf) > self.limit + 1:  # +1: a CR may still be waiting for its LF
            if not self._discarding:
                events.append(LineTooLong(len(buf)))
                self._discarding = True
            buf.clear()
        return events


# --- commands ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Command:
    """Base of the typed commands."""


@dataclass(frozen=True, slots=True)
class Stat(Command):
    pass


@dataclass(frozen=True, slots=True)
class List(Command):
    msg: int | None


@dataclass(frozen=True, slots=True)
class Retr(Command):
    msg: int


@dataclass(frozen=True, slots=True)
class Dele(Command):
    msg: int


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Rset(Command):
    pass


@dataclass(frozen=True, slots=True)
class Quit(Command):
    pass


@dataclass(frozen=True, slots=True)
class Top(Command):
    msg: int
    lines: int


@dataclass(frozen=True, slots=True)
class Uidl(Command):
    msg: int | None


@dataclass(frozen=True, slots=True)
class User(Command):
    name: str


@dataclass(frozen=True, slots=True)
class Pass(Command):
    password: str  # the rest of the line: passwords may contain spaces (RFC 1939 section 7)


@dataclass(frozen=True, slots=True)
class Apop(Command):
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class Capa(Command):
    pass


@dataclass(frozen=True, slots=True)
class Auth(Command):
    mechanism: str | None  # None: bare AUTH, list the mechanisms
    initial: str | None  # base64 initial response; "=" is the empty one (RFC 5034 section 4)


@dataclass(frozen=True, slots=True)
class Stls(Command):
    pass


@dataclass(frozen=True, slots=True)
class ParseError:
    message: str  # goes after "-ERR "


def _number(text: str, what: str) -> int | ParseError:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return ParseError(f"Invalid {what}: {text[:MAX_ARGUMENT]!r} is not a number")
    return int(text)


def _message_number(text: str) -> int | ParseError:
    value = _number(text, "message number")
    if value == 0:
        return ParseError("Invalid message number: numbers start at 1")
    return value


def _no_args(cls: type[Command], keyword: str, args: list[str]) -> Command | ParseError:
    if args:
        return ParseError(f"{keyword} takes no arguments")
    return cls()


def _optional_msg(
    cls: type[List] | type[Uidl], keyword: str, args: list[str]
) -> Command | ParseError:
    if not args:
        return cls(None)
    if len(args) > 1:
        return ParseError(f"{keyword} takes at most one argument (a message number)")
    msg = _message_number(args[0])
    return msg if isinstance(msg, ParseError) else cls(msg)


def _one_msg(cls: type[Retr] | type[Dele], keyword: str, args: list[str]) -> Command | ParseError:
    if len(args) != 1:
        return ParseError(f"{keyword} needs exactly one argument (a message number)")
    msg = _message_number(args[0])
    return msg if isinstance(msg, ParseError) else cls(msg)


def _top(args: list[str]) -> Command | ParseError:
    if len(args) != 2:
        return ParseError("TOP needs two arguments: a message number and a number of lines")
    msg = _message_number(args[0])
    if isinstance(msg, ParseError):
        return msg
    lines = _number(args[1], "number of lines")
    return lines if isinstance(lines, ParseError) else Top(msg, lines)


def _auth(args: list[str]) -> Command | ParseError:
    if not args:
        return Auth(None, None)
    if len(args) > 2:
        return ParseError("AUTH takes a mechanism and an optional initial response")
    return Auth(args[0].upper(), args[1] if len(args) == 2 else None)


def parse_command(line: bytes) -> Command | ParseError:
    """One command line (without its line end)."""
    # latin-1 maps every byte to one character, so nothing here can fail to decode.
    text = line.decode("latin-1")
    keyword, _, rest = text.partition(" ")
    if not keyword:
        return ParseError("Empty command" if not text.strip() else "Command must start the line")
    if not keyword.isascii() or not keyword.isalpha() or len(keyword) > 4:
        return ParseError(f"Unknown command: {keyword[:MAX_ARGUMENT]!r}")
    keyword = keyword.upper()
    if keyword == "PASS":
        if not rest:
            return ParseError("PASS needs a password")
        return Pass(rest)
    args = rest.split(" ") if rest else []
    if "" in args:
        return ParseError("Arguments must be separated by a single space")
    if keyword != "AUTH" and args and max(map(len, args)) > MAX_ARGUMENT:
        return ParseError(f"Argument too long (at most {MAX_ARGUMENT} characters)")
    parse = _PARSERS.get(keyword)
    if parse is None:
        return ParseError(f"Unknown command: {keyword}")
    return parse(keyword, args)


def _user(keyword: str, args: list[str]) -> Command | ParseError:
    if len(args) != 1:
        return ParseError("USER needs exactly one argument (a mailbox name)")
    return User(args[0])


def _apop(keyword: str, args: list[str]) -> Command | ParseError:
    if len(args) != 2:
        return ParseError("APOP needs a name and a digest")
    return Apop(args[0], args[1])


# keyword -> parser of its arguments (one dict look-up per command line)
_PARSERS: dict[str, Callable[[str, list[str]], Command | ParseError]] = {
    "STAT": partial(_no_args, Stat),
    "NOOP": partial(_no_args, Noop),
    "RSET": partial(_no_args, Rset),
    "QUIT": partial(_no_args, Quit),
    "CAPA": partial(_no_args, Capa),
    "STLS": partial(_no_args, Stls),
    "LIST": partial(_optional_msg, List),
    "UIDL": partial(_optional_msg, Uidl),
    "RETR": partial(_one_msg, Retr),
    "DELE": partial(_one_msg, Dele),
    "TOP": lambda keyword, args: _top(args),
    "USER": _user,
    "APOP": _apop,
    "AUTH": lambda keyword, args: _auth(args),
}
