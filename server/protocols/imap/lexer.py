"""IMAP tokens (RFC 3501 section 9, RFC 9051): atoms, strings, literals, numbers, dates,
flags and mailbox names, read by a `Cursor` over one command's lines and literals.

Character classes are single-pass (no nested quantifiers), so hostile input cannot make
them backtrack. Every error is a ValueError whose text the client may see.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from server.protocols.imap import utf7
from server.protocols.imap.requests import InvalidMailboxName, LiteralData, SpooledLiteral
from server.protocols.imap.seqset import MAX_NUMBER, SeqSet

SYSTEM_FLAGS: Final = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


# ---------------------------------------------------------------------------------------
# Tokens

SP: Final = 0x20
DQUOTE: Final = 0x22
OPEN: Final = 0x28
CLOSE: Final = 0x29
LBRACKET: Final = 0x5B
RBRACKET: Final = 0x5D
LT: Final = 0x3C
LIT: Final = -2  # peek(): a literal comes next
END: Final = -1  # peek(): nothing left

# Character classes are single-pass (no nested quantifiers), so hostile input cannot make
# them backtrack.
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 section 9): 7-bit only, so a tag with
# 8-bit bytes is no tag (answered "* BAD", never echoed mangled).
TAG = re.compile(rb'[^(){ \x00-\x1f\x7f-\xff%*"\\+]+')
ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]]+')
_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\]+')
_LIST_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f"\\]+')
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE = re.compile(rb"\\(.)")
_NUMBER = re.compile(rb"[0-9]+")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_FLAG = re.compile(rb'\\?[^(){ \x00-\x1f\x7f-\xff%*"\\\]]+')
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9]|[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)

_PLAIN_NAME = re.compile(rb"[ -%'-~]*\Z")

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


def as_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def utf8_mailbox_name(raw: bytes) -> str:
    """A mailbox name sent after ENABLE IMAP4rev2: UTF-8 as is, "&" an ordinary character
    (RFC 9051 5.1); "INBOX" in any case normalized. ValueError when not UTF-8."""
    if len(raw) == 5 and raw.upper() == b"INBOX":
        return "INBOX"
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("Mailbox name is not UTF-8") from None


def mailbox_name(raw: bytes) -> str:
    """Wire mailbox name -> Unicode name: modified UTF-7 decoded, raw UTF-8 accepted,
    "INBOX" in any case normalized. ValueError for invalid modified UTF-7."""
    if len(raw) == 5 and raw.upper() == b"INBOX":
        return "INBOX"
    if _PLAIN_NAME.match(raw):
        return raw.decode("ascii")  # what utf7.decode gives for printable ASCII without "&"
    if not raw.isascii():
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("Mailbox name is neither modified UTF-7 nor UTF-8") from None
    try:
        return utf7.decode(raw)
    except ValueError:
        raise ValueError("Mailbox name is not valid modified UTF-7") from None


class Cursor:
    """Position in a command made of text segments with literals between them.

    A command "a LOGIN {3}\\r\\nbob {6}\\r\\nsecret\\r\\n" is segments
    [b"a LOGIN ", b" ", b""] and literals [b"bob", b"secret"]: a literal sits at the end of
    every segment but the last. All errors are ValueError with a client-facing reason.
    """

    __slots__ = ("_segs", "_lits", "_i", "pos", "line", "utf8")

    def __init__(
        self,
        segs: list[bytes],
        lits: list[tuple[LiteralData, bool]] | None = None,
        utf8: bool = False,
    ) -> None:
        self._segs = segs
        self._lits = lits or []
        self._i = 0
        self.pos = 0
        self.line = segs[0]
        self.utf8 = utf8  # mailbox names are UTF-8, not modified UTF-7 (IMAP4rev2 enabled)

    def peek(self) -> int:
        if self.pos < len(self.line):
            return self.line[self.pos]
        return LIT if self._i < len(self._lits) else END

    def advance(self) -> None:
        self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self._i >= len(self._lits)

    def end(self) -> None:
        if not self.at_end():
            raise ValueError("Unexpected extra arguments")

    def sp(self, what: str = "space") -> None:
        if self.pos < len(self.line) and self.line[self.pos] == SP:
            self.pos += 1
        else:
            raise ValueError(f"Expected {what}" if what != "space" else "Missing argument")

    def expect(self, char: int, what: str) -> None:
        if self.pos < len(self.line) and self.line[self.pos] == char:
            self.pos += 1
        else:
            raise ValueError(f"Expected {what}")

    def accept(self, char: int) -> bool:
        if self.pos < len(self.line) and self.line[self.pos] == char:
            self.pos += 1
            return True
        return False

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = pattern.match(self.line, self.pos)
        if m is None:
            raise ValueError(f"Expected {what}")
        self.pos = m.end()
        return m.group()

    def atom(self, what: str) -> str:
        return self.match(ATOM, what).decode("ascii", "replace")

    def word(self, what: str) -> str:
        """An atom, upper-cased (keywords, options, command names)."""
        return self.match(ATOM, what).decode("ascii", "replace").upper()

    def literal(self, what: str = "literal", *, binary: bool = False) -> bytes:
        data = self.message_literal(what, binary=binary)
        if isinstance(data, SpooledLiteral):
            # Only message data is streamed; a string this big is no mailbox name.
            raise ValueError(f"{what} too long")
        return data

    def message_literal(self, what: str = "literal", *, binary: bool = False) -> LiteralData:
        """A literal that may have been streamed to a Spool (APPEND message data)."""
        if self.pos < len(self.line) or self._i >= len(self._lits):
            raise ValueError(f"Expected {what}")
        data, is_binary = self._lits[self._i]
        if is_binary and not binary:
            raise ValueError("literal8 is not allowed here")
        self._i += 1
        self.line = self._segs[self._i]
        self.pos = 0
        return data

    def literal_is_binary(self) -> bool:
        return self._i < len(self._lits) and self._lits[self._i][1]

    def quoted(self, what: str) -> bytes:
        m = _QUOTED.match(self.line, self.pos)
        if m is None:
            raise ValueError(f"Expected {what}")
        self.pos = m.end()
        raw = m.group(1)
        return _UNESCAPE.sub(rb"\1", raw) if b"\\" in raw else raw

    def string(self, what: str) -> bytes:
        c = self.peek()
        if c == DQUOTE:
            return self.quoted(what)
        if c == LIT:
            return self.literal(what)
        raise ValueError(f"Expected {what}")

    def astring(self, what: str) -> bytes:
        c = self.peek()
        if c == DQUOTE:
            return self.quoted(what)
        if c == LIT:
            return self.literal(what)
        return self.match(_ASTRING_ATOM, what)

    def nstring(self, what: str) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == b"NIL" and not ATOM.match(
            self.line, self.pos + 3
        ):
            self.pos += 3
            return None
        return self.string(what)

    def number(self, what: str, *, nz: bool = False, bits: int = 32) -> int:
        raw = self.match(_NUMBER, what)
        if len(raw) > 20:
            raise ValueError(f"Invalid {what}")
        value = int(raw)
        if value >= 1 << bits or (nz and value == 0):
            raise ValueError(f"Invalid {what}")
        return value

    def seqset(self) -> SeqSet:
        m = _SEQSET.match(self.line, self.pos)
        if m is None:
            raise ValueError("Expected sequence set")
        self.pos = m.end()
        raw = m.group()
        # Fast path for the common one-number set (a UID); SeqSet.parse decides the rest.
        if raw.isdigit() and raw[0] != 0x30 and len(raw) <= 10:
            value = int(raw)
            if value <= MAX_NUMBER:
                return SeqSet(((value, value),))
        return SeqSet.parse(raw)

    def date(self) -> dt.date:
        quoted = self.accept(DQUOTE)
        m = _DATE.match(self.line, self.pos)
        if m is None:
            raise ValueError("Expected date")
        self.pos = m.end()
        if quoted:
            self.expect(DQUOTE, "date")
        month = _MONTHS.get(m.group(2).upper().decode())
        try:
            if month is None:
                raise ValueError
            return dt.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise ValueError("Invalid date") from None

    def datetime(self) -> dt.datetime:
        m = _DATE_TIME.match(self.line, self.pos)
        if m is None:
            raise ValueError("Expected date-time")
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.upper().decode())
        try:
            if month is None or int(zm) > 59:
                raise ValueError
            offset = dt.timedelta(hours=int(zh), minutes=int(zm))
            zone = dt.timezone(-offset if sign == b"-" else offset)
            return dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
        except ValueError:
            raise ValueError("Invalid date-time") from None

    def flag(self) -> str:
        raw = self.match(_FLAG, "flag").decode("ascii", "replace")
        if raw[0] == "\\":
            canonical = SYSTEM_FLAGS.get(raw.lower())
            if canonical is not None:
                return canonical
            if raw == "\\":
                raise ValueError("Invalid flag")
        return raw

    def flag_list(self) -> tuple[str, ...]:
        self.expect(OPEN, "flag list")
        flags: list[str] = []
        if not self.accept(CLOSE):
            flags.append(self.flag())
            while self.accept(SP):
                flags.append(self.flag())
            self.expect(CLOSE, '")" after flags')
        return tuple(flags)

    def mailbox(self, what: str = "mailbox name") -> str:
        raw = self.astring(what)
        try:
            return utf8_mailbox_name(raw) if self.utf8 else mailbox_name(raw)
        except ValueError:
            return InvalidMailboxName(as_text(raw))

    def list_mailbox(self) -> str:
        c = self.peek()
        raw = (
            self.string("mailbox pattern")
            if c in (DQUOTE, LIT)
            else self.match(_LIST_ATOM, "mailbox pattern")
        )
        if raw.upper() == b"INBOX":
            return as_text(raw)
        try:
            return utf8_mailbox_name(raw) if self.utf8 else mailbox_name(raw)
        except ValueError:
            return InvalidMailboxName(as_text(raw))

    def paren_words(self, what: str) -> list[str]:
        """'(' [atom *(SP atom)] ')', upper-cased."""
        self.expect(OPEN, what)
        words: list[str] = []
        if not self.accept(CLOSE):
            words.append(self.word(what))
            while self.accept(SP):
                words.append(self.word(what))
            self.expect(CLOSE, f'")" after {what}')
        return words

    def peek_word(self) -> str:
        """The upper-case atom at the cursor, without consuming it ("" if none)."""
        m = ATOM.match(self.line, self.pos)
        return m.group().decode("ascii", "replace").upper() if m else ""

    def mark(self) -> int:
        return self.pos

    def reset(self, mark: int) -> None:
        self.pos = mark


# ---------------------------------------------------------------------------------------
