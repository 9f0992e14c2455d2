"""IMAP command framing (sans-IO): client bytes in, request events out.

Usage by a session::

    reader = CommandReader(max_command_size=settings.MaxCommandSize, max_literal_size=limit)
    reader.feed(data)                      # whatever the socket gave
    while (event := reader.next_event()) is not None:
        match event:
            case Command(tag, name, args): ...        # dispatch on type(args)
            case NeedContinuation(text): send(b"+ " + text)
            case ParseError(tag, message): send BAD (tag or "*"), carry on
            case BadCharset(tag, name, charset): send NO [BADCHARSET (UTF-8 US-ASCII)]
            case CommandTooLong(tag) | LiteralTooLarge(tag, size): send BAD / NO, carry on
            case RawLine(line): ...                     # only in line mode

The reader cuts the byte stream into commands (lines and the literals between them) and
hands each complete command to the grammar (parser.parse_command). It parses lazily: each
`next_event()` consumes only what that one event needs, so a session that sets
`reader.line_mode = True` right after taking an IDLE or AUTHENTICATE command gets the
following lines (DONE, base64 SASL responses, "*") as `RawLine` events, even when the
client sent them in the same packet. Set it back to False afterwards.

After STARTTLS the session must call `discard_buffer()` so plaintext pipelined behind the
STARTTLS command is never executed inside TLS (the CVE-2011-0411 class of bug).

Limits: a command's lines, without literal data, may total `max_command_size` bytes; its
literals together may total `max_literal_size` bytes (one APPEND message, or all messages
of a MULTIAPPEND; other commands' literals only `max_command_size`), and a literal that
would pass that is refused from its announced size before any of it is read. A refused
non-synchronizing literal is read and dropped up to MAX_SKIP_SIZE; a bigger one sets
`closing`: the session answers, says BYE and closes. The buffer holds at most one chunk
from `feed()` plus the current command's lines (a partial line over the limit is dropped as
it arrives) plus its literals.
Both limits are plain attributes, read at each event: a session should keep
`max_literal_size` small (a few KB, enough for LOGIN) until the client has authenticated,
so nobody can make the server hold a large APPEND before login.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

from server.protocols.imap.lexer import TAG, Cursor
from server.protocols.imap.parser import Head, head, parse_command
from server.protocols.imap.requests import (
    Command,
    CommandTooLong,
    Event,
    LiteralData,
    LiteralTooLarge,
    NeedContinuation,
    ParseError,
    RawLine,
    Spool,
    SpooledLiteral,
)

DEFAULT_MAX_COMMAND_SIZE: Final = 10240
DEFAULT_MAX_LITERAL_SIZE: Final = 64 * 1024 * 1024
#: RFC 2971 3.3 lets a client send 30 ID fields of 30 octets with values of 1024: an ID that
#: size must be accepted even where max_command_size is smaller.
ID_MAX_COMMAND_SIZE: Final = 34 * 1024
_ID_COMMAND = re.compile(rb"[^ ]+ ID[ (]", re.IGNORECASE)


# A literal announcement at the end of a line: {n}, {n+} (RFC 7888), ~{n} (RFC 3516).
_LITERAL_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_MARKER_WINDOW = 48

#: An APPEND literal from this size on (counting the command's literals held so far) goes
#: to the session's Spool; smaller ones, e.g. a mailbox name, are kept in memory.
SPOOL_MIN: Final = 64 * 1024

_ST_LINE: Final = 0
_ST_LITERAL: Final = 1
_ST_SKIP: Final = 2
_ST_DISCARD: Final = 3
_ST_CLOSED: Final = 4
# Commands whose literals carry messages: max_literal_size. Any other command's literals
# (a LIST pattern, a SEARCH string, a mailbox name) are held to max_command_size.
_BIG_LITERAL_COMMANDS: Final = frozenset({"APPEND"})
#: Most octets of a refused non-synchronizing literal read and thrown away so the session can
#: go on; past this ({4294967296+}, say) the reader gives up and `closing` asks the session
#: to answer and close rather than wait for bytes that may never end (RFC 7888 section 4).
MAX_SKIP_SIZE: Final = 1024 * 1024
_NEED_DATA: Final = object()


def _discard_spools(lits: list[tuple[LiteralData, bool]]) -> None:
    for data, _ in lits:
        if isinstance(data, SpooledLiteral):
            data.spool.discard()


def _find_marker(line: bytes) -> tuple[int, int, bool, bool] | None:
    """(start, size, non-synchronizing, binary) of a literal announced at the end of line."""
    if not line.endswith(b"}"):
        return None
    tail_start = max(0, len(line) - _MARKER_WINDOW)
    m = _LITERAL_MARKER.search(line, tail_start)
    if m is None:
        return None
    digits = m.group(2)
    size = int(digits) if len(digits) <= 20 else 1 << 70
    return m.start(), size, bool(m.group(3)), bool(m.group(1))


class CommandReader:
    """Incremental IMAP command reader (see the module docstring).

    feed(data): add bytes from the client.
    next_event(): the next Event, or None when more bytes are needed.
    events(): iterate next_event() until None.
    line_mode: when True, each line comes out as RawLine (no literal or command parsing).
    discard_buffer(): drop unread bytes (after STARTTLS); returns how many.
    take_buffer(): hand unread bytes over to someone else (a proxy after login).
    """

    def __init__(
        self,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        max_literal_size: int = DEFAULT_MAX_LITERAL_SIZE,
    ) -> None:
        self.max_command_size = max_command_size
        self.max_literal_size = max_literal_size
        self.line_mode = False
        # After ENABLE IMAP4rev2 mailbox names arrive as UTF-8 (RFC 9051 5.1).
        self.utf8_names = False
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already searched for LF
        self._state = _ST_LINE
        self._segs: list[bytes] = []
        self._lits: list[tuple[LiteralData, bool]] = []
        self._cmd_len = 0
        self._tag: str | None = None
        self._name: str | None = None
        self._head: Head | None = None  # head() of the first line, when it had a literal
        self._lit = bytearray()
        self._lit_size = 0
        self._lit_binary = False
        self._lit_total = 0  # announced sizes of the command's literals so far
        self._skip = 0
        self.closing = False  # see MAX_SKIP_SIZE: answer the last event, then close
        self._tail = b""
        self._discard_markers = True
        # spool_factory(size, binary) -> Spool or None: set by a session that can stream
        # APPEND message literals (to the store's body file) instead of holding them.
        self.spool_factory: Callable[[int, bool], Spool | None] | None = None
        self._spool: Spool | None = None
        self._spooled = 0  # octets of the current literal written to _spool

    @property
    def buffered(self) -> int:
        """Bytes taken in for the command being assembled (streamed literals included)
        plus unread input: what the protocol log counts as consumed once they go."""
        return (
            self.in_memory
            + self._spooled
            + sum(d.size for d, _ in self._lits if isinstance(d, SpooledLiteral))
        )

    @property
    def in_memory(self) -> int:
        """Bytes the reader holds in memory: unread input, the command's lines and its
        literals that were not streamed to a Spool."""
        return (
            len(self._buf)
            + len(self._lit)
            + sum(map(len, self._segs))
            + sum(len(d) for d, _ in self._lits if isinstance(d, bytes))
        )

    @property
    def in_command(self) -> bool:
        """True while part of a command has been read (e.g. waiting for a literal)."""
        return bool(self._segs) or self._state != _ST_LINE

    @property
    def pending_literal(self) -> int:
        """Bytes of the current literal still to come (also while skipping a refused one)."""
        if self._state == _ST_LITERAL:
            return self._lit_size - len(self._lit) - self._spooled
        return self._skip if self._state == _ST_SKIP else 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def discard_buffer(self) -> int:
        """Drop every byte not yet turned into an event, and any partial command."""
        dropped = len(self._buf)
        self._buf = bytearray()
        self._scan = 0
        self._reset_command()
        self._state = _ST_LINE
        return dropped

    def take_buffer(self) -> bytes:
        """Remove and return every byte not yet turned into an event, e.g. the commands a
        client pipelined behind LOGIN, for a proxy to forward. Call it between commands: a
        partially assembled command is dropped like discard_buffer() drops it."""
        data = bytes(self._buf)
        self.discard_buffer()
        return data

    def events(self) -> Iterator[Event]:
        while (event := self.next_event()) is not None:
            yield event

    __iter__ = events

    def next_event(self) -> Event | None:
        while True:
            state = self._state
            if state == _ST_LINE:
                result = self._read_line()
            elif state == _ST_LITERAL:
                result = self._read_literal()
            elif state == _ST_SKIP:
                result = self._skip_literal()
            elif state == _ST_CLOSED:
                self._buf.clear()
                return None
            else:
                result = self._discard_line()
            if result is _NEED_DATA:
                return None
            if result is not None:
                return result  # type: ignore[return-value]

    # -- states ---------------------------------------------------------------------

    def _reset_command(self, drop: bool = True) -> None:
        """Forget the command being assembled; `drop` discards its streamed literals
        (False when they were handed on with the command)."""
        if drop:
            _discard_spools(self._lits)
            if self._spool is not None:
                self._spool.discard()
        self._spool = None
        self._spooled = 0
        self._segs = []
        self._lits = []
        self._cmd_len = 0
        self._tag = None
        self._name = None
        self._head = None
        self._lit = bytearray()
        self._lit_total = 0

    def _size_limit(self, start: bytes | bytearray) -> int:
        """max_command_size, raised to ID_MAX_COMMAND_SIZE for an ID command."""
        limit = self.max_command_size
        if limit < ID_MAX_COMMAND_SIZE and not self.line_mode and _ID_COMMAND.match(start[:80]):
            return ID_MAX_COMMAND_SIZE
        return limit

    def _guess_tag(self, data: bytes | bytearray) -> str | None:
        if self._tag is not None:
            return self._tag
        if self._segs:
            data = self._segs[0]
        m = TAG.match(data)
        if m is None or data[m.end() : m.end() + 1] != b" ":
            return None
        return m.group().decode("ascii", "replace")

    def _refuse(self, marker: tuple[int, int, bool, bool] | None) -> None:
        """Forget the command; bytes of an announced non-synchronizing literal and the rest
        of its line are coming regardless, so arrange to skip them."""
        self._reset_command()
        if marker is not None and marker[2]:
            self._skip_or_close(marker[1])
        else:
            self._state = _ST_LINE

    def _skip_or_close(self, size: int) -> None:
        if size > MAX_SKIP_SIZE:
            self.closing = True
            self._buf = bytearray()
            self._state = _ST_CLOSED
        else:
            self._skip = size
            self._state = _ST_SKIP

    def _read_line(self) -> object:
        buf = self._buf
        i = buf.find(b"\n", self._scan)
        if i < 0:
            # A trailing CR is most likely the first half of CRLF, which does not count.
            pending = len(buf) - (buf[-1:] == b"\r")
            total = self._cmd_len + pending
            if total > self.max_command_size and total > self._size_limit(
                self._segs[0] if self._segs else buf
            ):
                tag = None if self.line_mode else self._guess_tag(buf)
                self._reset_command()
                self._discard_markers = not self.line_mode
                self._tail = bytes(buf[-_MARKER_WINDOW:])
                self._buf = bytearray()
                self._scan = 0
                self._state = _ST_DISCARD
                return CommandTooLong(tag)
            self._scan = len(buf)
            return _NEED_DATA
        # One copy: the line without its CR (a bytearray slice then bytes() would be two).
        end = i - 1 if i and buf[i - 1] == 0x0D else i
        line = bytes(memoryview(buf)[:end]) if end else b""
        del buf[: i + 1]
        self._scan = 0
        if self.line_mode:
            if len(line) > self.max_command_size:
                return CommandTooLong(None)
            return RawLine(line)
        if not self._segs:
            if not line:
                return None  # blank lines between commands are ignored
            if line[-1] != 0x7D and len(line) <= self.max_command_size:
                # The common case, a whole command on one line: nothing of a previous
                # command to forget (no segments, so no literals or spools either).
                return parse_command([line], None, self.utf8_names)
        self._cmd_len += len(line)
        marker = _find_marker(line)
        if self._cmd_len > self.max_command_size and self._cmd_len > self._size_limit(
            self._segs[0] if self._segs else line
        ):
            tag = self._guess_tag(line)
            self._refuse(marker)
            return CommandTooLong(tag)
        if marker is None:
            self._segs.append(line)
            lits = self._lits
            segs = self._segs
            known_head = self._head
            self._reset_command(drop=False)
            event = parse_command(segs, lits, self.utf8_names, known_head)
            if not isinstance(event, Command):
                _discard_spools(lits)
            return event
        start, size, nonsync, binary = marker
        seg = line[:start]
        if not self._segs:
            # Refuse a literal for a command that is already known to be bad, rather than
            # asking the client for data that will be thrown away (RFC 3501 7.5).
            cur = Cursor([seg])
            tag, name, parser, _uid = head(cur)
            if isinstance(parser, ParseError):
                self._refuse(marker)
                return parser
            assert tag is not None and name is not None
            self._tag = tag
            self._name = name
            self._head = (tag, name, parser, _uid, cur.pos)
        limit = (
            self.max_literal_size
            if self._name in _BIG_LITERAL_COMMANDS
            else min(self.max_literal_size, self.max_command_size)
        )
        if size + self._lit_total > limit:
            tag = self._tag
            self._refuse(marker)
            return LiteralTooLarge(tag, size)
        self._segs.append(seg)
        self._lit = bytearray()
        self._lit_size = size
        self._lit_binary = binary
        self._lit_total += size
        self._spooled = 0
        self._spool = None
        if (
            self.spool_factory is not None
            and self._name == "APPEND"
            and size + self._held() >= SPOOL_MIN
        ):
            self._spool = self.spool_factory(size, binary)
        self._state = _ST_LITERAL
        return None if nonsync else NeedContinuation()

    def _held(self) -> int:
        return sum(len(d) for d, _ in self._lits if isinstance(d, bytes))

    def _read_literal(self) -> object:
        if self._spool is not None:
            return self._stream_literal()
        need = self._lit_size - len(self._lit)
        if need:
            buf = self._buf
            if not buf:
                return _NEED_DATA
            if len(buf) <= need:
                if not self._lit:
                    # Hand the whole buffer over instead of copying it: big APPENDs stay linear.
                    self._lit = buf
                    self._buf = bytearray()
                else:
                    self._lit += buf
                    buf.clear()
            else:
                self._lit += buf[:need]
                del buf[:need]
            if len(self._lit) < self._lit_size:
                return _NEED_DATA
        self._lits.append((bytes(self._lit), self._lit_binary))
        self._lit = bytearray()
        self._state = _ST_LINE
        self._scan = 0
        return None

    def _stream_literal(self) -> object:
        """Hand what arrived of a streamed literal to its Spool: the reader keeps no more
        of it than one feed()."""
        spool = self._spool
        assert spool is not None
        need = self._lit_size - self._spooled
        if need:
            buf = self._buf
            if not buf:
                return _NEED_DATA
            if len(buf) <= need:
                spool.write(buf)
                self._spooled += len(buf)
                self._buf = bytearray()
            else:
                spool.write(buf[:need])
                self._spooled += need
                del buf[:need]
            if self._spooled < self._lit_size:
                return _NEED_DATA
        self._lits.append(
            (SpooledLiteral(self._lit_size, spool, self._lit_binary), self._lit_binary)
        )
        self._spool = None
        self._spooled = 0
        self._state = _ST_LINE
        self._scan = 0
        return None

    def _skip_literal(self) -> object:
        buf = self._buf
        take = min(self._skip, len(buf))
        del buf[:take]
        self._skip -= take
        if self._skip:
            return _NEED_DATA
        # The command line goes on after the literal; drop it up to its end.
        self._tail = b""
        self._discard_markers = True
        self._state = _ST_DISCARD
        return None

    def _discard_line(self) -> object:
        buf = self._buf
        i = buf.find(b"\n")
        if i < 0:
            self._tail = (self._tail + bytes(buf[-_MARKER_WINDOW:]))[-_MARKER_WINDOW:]
            buf.clear()
            return _NEED_DATA
        line = self._tail + bytes(buf[:i])
        del buf[: i + 1]
        self._tail = b""
        self._scan = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        marker = _find_marker(line) if self._discard_markers else None
        if marker is not None and marker[2]:
            self._skip_or_close(marker[1])
        else:
            self._state = _ST_LINE
        return None


def parse_line(data: bytes) -> Event:
    """Parse one command given as bytes with its literals but without the final CRLF
    (b"a LOGIN {3}\\r\\nbob pw"). For tests and tools; the server uses CommandReader."""
    reader = CommandReader(max_command_size=1 << 30, max_literal_size=1 << 30)
    reader.feed(data + b"\r\n")
    for event in reader.events():
        if not isinstance(event, NeedContinuation):
            return event
    raise ValueError("incomplete command")
