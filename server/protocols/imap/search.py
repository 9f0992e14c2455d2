"""SEARCH criteria as a syntax tree (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER).

This module only parses; the search handler evaluates the tree. Several top-level keys are
an implicit AND (`AndKey`). Desugared on the way in:
  NEW -> AndKey(FlagKey("\\Recent"), FlagKey("\\Seen", present=False))
  OLD -> FlagKey("\\Recent", present=False)
  ANSWERED/UNANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT and their UN- forms,
  KEYWORD k / UNKEYWORD k -> FlagKey(flag, present)
  FROM/TO/CC/BCC/SUBJECT x -> HeaderKey("From"/"To"/"Cc"/"Bcc"/"Subject", x)

Search strings are decoded from the command's CHARSET (UTF-8 when none is given; RFC 3501
says US-ASCII, which UTF-8 contains, and clients send UTF-8 regardless). An unknown charset
raises `BadCharsetError`, which the session answers with `NO [BADCHARSET (UTF-8 US-ASCII)]`.
"""

from __future__ import annotations

import codecs
import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

from server.protocols.imap.seqset import SeqSet

#: Charsets listed in the BADCHARSET response code; others that Python knows also work.
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")

#: Deepest nesting of NOT / OR / parentheses accepted, so hostile input cannot exhaust
#: the stack.
MAX_DEPTH = 64


class BadCharsetError(ValueError):
    """The SEARCH CHARSET is not one this server can decode."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"Unsupported charset {charset}")
        self.charset = charset


def lookup_charset(name: str) -> str:
    """Python codec name for an IMAP charset name; BadCharsetError when unknown or not a
    text encoding (Python also knows codecs like "rot13" and "hex")."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise BadCharsetError(name) from None
    if not getattr(info, "_is_text_encoding", True):
        raise BadCharsetError(name)
    return info.name


class SearchKey:
    """Base class of every search tree node."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AllKey(SearchKey):
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class FlagKey(SearchKey):
    """Messages with (present=True) or without (present=False) a flag. System flags are
    spelled canonically ("\\Seen"); keywords as sent (compare case-insensitively)."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class HeaderKey(SearchKey):
    """Header `field` contains `value` (case-insensitive substring); an empty value matches
    every message that has the field (RFC 3501 6.4.4 HEADER)."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyKey(SearchKey):
    """The body contains `value`."""

    value: str


@dataclass(frozen=True, slots=True)
class TextKey(SearchKey):
    """The header or body contains `value`."""

    value: str


@dataclass(frozen=True, slots=True)
class DateKey(SearchKey):
    """BEFORE/ON/SINCE (which="internal", the INTERNALDATE's date) and
    SENTBEFORE/SENTON/SENTSINCE (which="sent", the Date: header's date), timezone ignored."""

    which: Literal["internal", "sent"]
    op: Literal["before", "on", "since"]
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey(SearchKey):
    """LARGER n (RFC822.SIZE > n) or SMALLER n (RFC822.SIZE < n)."""

    op: Literal["larger", "smaller"]
    size: int


@dataclass(frozen=True, slots=True)
class SeqKey(SearchKey):
    """A sequence set (uid=False) or `UID set` (uid=True); `$` arrives as SeqSet.saved."""

    seqset: SeqSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class ModSeqKey(SearchKey):
    """MODSEQ [entry type] n (RFC 7162 3.1.5): messages whose mod-sequence is >= n.
    entry is e.g. "/flags/\\seen" and entry_type "priv"/"shared"/"all" when given."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class AgeKey(SearchKey):
    """OLDER n / YOUNGER n (RFC 5032): INTERNALDATE more / at most n seconds ago."""

    op: Literal["older", "younger"]
    seconds: int


@dataclass(frozen=True, slots=True)
class NotKey(SearchKey):
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey(SearchKey):
    keys: tuple[SearchKey, ...]


class Tokens(Protocol):
    """What the search parser needs from the command parser's cursor. Every method raises
    ValueError with a client-facing reason on a syntax error."""

    def peek(self) -> int: ...
    def advance(self) -> None: ...
    def sp(self, what: str = ...) -> None: ...
    def expect(self, char: int, what: str) -> None: ...
    def atom(self, what: str) -> str: ...
    def astring(self, what: str) -> bytes: ...
    def string(self, what: str) -> bytes: ...
    def number(self, what: str, *, nz: bool = ..., bits: int = ...) -> int: ...
    def seqset(self) -> SeqSet: ...
    def date(self) -> dt.date: ...
    def flag(self) -> str: ...


_SP = 0x20
_OPEN = 0x28
_CLOSE = 0x29
_SEQ_START = frozenset(b"0123456789*$")

_FLAG_KEYS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_HEADER_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
_DATE_KEYS: dict[str, tuple[Literal["internal", "sent"], Literal["before", "on", "since"]]] = {
    "BEFORE": ("internal", "before"),
    "ON": ("internal", "on"),
    "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"),
    "SENTON": ("sent", "on"),
    "SENTSINCE": ("sent", "since"),
}
_ENTRY_TYPES = ("priv", "shared", "all")


class _Parser:
    __slots__ = ("cur", "codec")

    def __init__(self, cur: Tokens, codec: str | None) -> None:
        self.cur = cur
        self.codec = codec

    def text(self, what: str) -> str:
        raw = self.cur.astring(what)
        if self.codec is None:
            return raw.decode("utf-8", "replace")
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError:
            raise ValueError(f"Search string is not valid {self.codec.upper()}") from None

    def program(self) -> SearchKey:
        keys = [self.key(0)]
        while self.cur.peek() == _SP:
            self.cur.sp()
            keys.append(self.key(0))
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))

    def key(self, depth: int) -> SearchKey:
        if depth > MAX_DEPTH:
            raise ValueError("Search criteria nested too deeply")
        cur = self.cur
        c = cur.peek()
        if c == _OPEN:
            cur.advance()
            keys = [self.key(depth + 1)]
            while cur.peek() == _SP:
                cur.sp()
                keys.append(self.key(depth + 1))
            cur.expect(_CLOSE, '")" after search keys')
            return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
        if c in _SEQ_START:
            return SeqKey(cur.seqset())
        word = cur.atom("search key").upper()
        if word in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[word]
            return FlagKey(flag, present)
        if word in _HEADER_KEYS:
            cur.sp()
            return HeaderKey(_HEADER_KEYS[word], self.text("search string"))
        if word in _DATE_KEYS:
            which, op = _DATE_KEYS[word]
            cur.sp()
            return DateKey(which, op, cur.date())
        handler = _KEY_HANDLERS.get(word)
        if handler is None:
            raise ValueError(f"Unknown search key {word}")
        return handler(self, depth)

    def all(self, depth: int) -> SearchKey:
        return AllKey()

    def new(self, depth: int) -> SearchKey:
        return AndKey((FlagKey("\\Recent"), FlagKey("\\Seen", False)))

    def keyword(self, depth: int, present: bool = True) -> SearchKey:
        self.cur.sp()
        return FlagKey(self.cur.flag(), present)

    def unkeyword(self, depth: int) -> SearchKey:
        return self.keyword(depth, False)

    def header(self, depth: int) -> SearchKey:
        self.cur.sp()
        name = self.cur.astring("header field name").decode("ascii", "replace")
        self.cur.sp()
        return HeaderKey(name, self.text("search string"))

    def body(self, depth: int) -> SearchKey:
        self.cur.sp()
        return BodyKey(self.text("search string"))

    def text_key(self, depth: int) -> SearchKey:
        self.cur.sp()
        return TextKey(self.text("search string"))

    def larger(self, depth: int) -> SearchKey:
        self.cur.sp()
        return SizeKey("larger", self.cur.number("size", bits=64))

    def smaller(self, depth: int) -> SearchKey:
        self.cur.sp()
        return SizeKey("smaller", self.cur.number("size", bits=64))

    def older(self, depth: int) -> SearchKey:
        self.cur.sp()
        return AgeKey("older", self.cur.number("interval", nz=True))

    def younger(self, depth: int) -> SearchKey:
        self.cur.sp()
        return AgeKey("younger", self.cur.number("interval", nz=True))

    def not_(self, depth: int) -> SearchKey:
        self.cur.sp()
        return NotKey(self.key(depth + 1))

    def or_(self, depth: int) -> SearchKey:
        self.cur.sp()
        left = self.key(depth + 1)
        self.cur.sp()
        return OrKey(left, self.key(depth + 1))

    def uid(self, depth: int) -> SearchKey:
        self.cur.sp()
        return SeqKey(self.cur.seqset(), uid=True)

    def modseq(self, depth: int) -> SearchKey:
        cur = self.cur
        cur.sp()
        entry = entry_type = None
        if cur.peek() == 0x22:
            entry = cur.string("entry name").decode("ascii", "replace")
            cur.sp()
            entry_type = cur.atom("entry type").lower()
            if entry_type not in _ENTRY_TYPES:
                raise ValueError("Expected entry type priv, shared or all")
            cur.sp()
        return ModSeqKey(cur.number("mod-sequence", bits=63), entry, entry_type)


_KEY_HANDLERS = {
    "ALL": _Parser.all,
    "NEW": _Parser.new,
    "KEYWORD": _Parser.keyword,
    "UNKEYWORD": _Parser.unkeyword,
    "HEADER": _Parser.header,
    "BODY": _Parser.body,
    "TEXT": _Parser.text_key,
    "LARGER": _Parser.larger,
    "SMALLER": _Parser.smaller,
    "OLDER": _Parser.older,
    "YOUNGER": _Parser.younger,
    "NOT": _Parser.not_,
    "OR": _Parser.or_,
    "UID": _Parser.uid,
    "MODSEQ": _Parser.modseq,
}


def parse_search_program(cur: Tokens, charset: str | None = None) -> SearchKey:
    """Parse `1*(SP search-key)` after the CHARSET (the cursor stands on the first key).
    `charset` is a Python codec name from `lookup_charset`, or None."""
    return _Parser(cur, charset).program()


def uses_modseq(key: SearchKey) -> bool:
    """True when the tree has a MODSEQ key (the response then carries (MODSEQ n), RFC 7162)."""
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, NotKey):
        return uses_modseq(key.key)
    if isinstance(key, OrKey):
        return uses_modseq(key.left) or uses_modseq(key.right)
    if isinstance(key, AndKey):
        return any(uses_modseq(k) for k in key.keys)
    return False


def uses_saved(key: SearchKey) -> bool:
    """True when the tree refers to `$`, the saved search result (RFC 5182)."""
    if isinstance(key, SeqKey):
        return key.seqset.saved
    if isinstance(key, NotKey):
        return uses_saved(key.key)
    if isinstance(key, OrKey):
        return uses_saved(key.left) or uses_saved(key.right)
    if isinstance(key, AndKey):
        return any(uses_saved(k) for k in key.keys)
    return False
