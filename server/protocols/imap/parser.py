"""IMAP4rev1 command reader: client bytes in, typed command events out (sans-IO).

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

The reader parses lazily: each `next_event()` consumes only what that one event needs, so
a session that sets `reader.line_mode = True` right after taking an IDLE or AUTHENTICATE
command gets the following lines (DONE, base64 SASL responses, "*") as `RawLine` events,
even when the client sent them in the same packet. Set it back to False afterwards.

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

Every command's arguments arrive as one dataclass per command (`Fetch`, `Store`, `Search`,
...). Mailbox names are decoded from modified UTF-7 (raw 8-bit UTF-8 is also accepted) and
any case of "INBOX" becomes "INBOX"; LIST/LSUB patterns are decoded but not normalized.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from server.protocols.imap import utf7
from server.protocols.imap.search import (
    BadCharsetError,
    SearchKey,
    lookup_charset,
    parse_search_program,
)
from server.protocols.imap.seqset import SeqSet
from server.protocols.imap.sortthread import SORT_KEYS, THREAD_ALGORITHMS, SortCriterion

DEFAULT_MAX_COMMAND_SIZE: Final = 10240
DEFAULT_MAX_LITERAL_SIZE: Final = 64 * 1024 * 1024
CONTINUATION_TEXT: Final = "Ready for additional command text."
#: RFC 2971 3.3 lets a client send 30 ID fields of 30 octets with values of 1024: an ID that
#: size must be accepted even where max_command_size is smaller.
ID_MAX_COMMAND_SIZE: Final = 34 * 1024
_ID_COMMAND = re.compile(rb"[^ ]+ ID[ (]", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Command:
    """A complete, well-formed command.

    name: upper-case command name as sent; "UID FETCH", "UID STORE", ... for UID forms
        (args.uid is then True). Dispatch on type(args) rather than on name.
    """

    tag: str
    name: str
    args: CommandArgs


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """A synchronizing literal was announced and accepted: send "+ <text>" now."""

    text: str = CONTINUATION_TEXT


@dataclass(frozen=True, slots=True)
class ParseError:
    """A malformed command: answer "<tag> BAD <message>" ("* BAD" when tag is None).
    name is the upper-case command name when it was recognised, else None."""

    tag: str | None
    message: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class BadCharset:
    """SEARCH named a charset this server cannot decode: answer
    "<tag> NO [BADCHARSET (UTF-8 US-ASCII)] ..." (see search.SUPPORTED_CHARSETS)."""

    tag: str
    name: str
    charset: str


@dataclass(frozen=True, slots=True)
class CommandTooLong:
    """A command's lines (literal data excluded) passed max_command_size. The rest of the
    command has been or will be dropped, up to its end of line."""

    tag: str | None


@dataclass(frozen=True, slots=True)
class LiteralTooLarge:
    """A literal would take the command's literals past max_literal_size bytes (size is
    the announced size of that literal). It was refused before reading:
    for {n} no "+" is due; for {n+} the n bytes that follow are skipped. The rest of the
    command line is dropped too. Answer "<tag> NO [TOOBIG] ..." or BAD."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line, CRLF stripped, read in line mode (IDLE's DONE, AUTHENTICATE responses)."""

    line: bytes


Event = (
    Command
    | NeedContinuation
    | ParseError
    | BadCharset
    | CommandTooLong
    | LiteralTooLarge
    | RawLine
)


# ---------------------------------------------------------------------------------------
# Argument types


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: `BODY[1.2.HEADER.FIELDS (FROM TO)]` is
    Section(part=(1, 2), specifier="HEADER.FIELDS", fields=("FROM", "TO")).

    part: the MIME part path; () is the whole message.
    specifier: "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME".
    fields: upper-case header field names for HEADER.FIELDS[.NOT], else ().
    """

    part: tuple[int, ...] = ()
    specifier: str = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = ".".join([*map(str, self.part), *([self.specifier] if self.specifier else [])])
        if self.fields:
            text += " (" + " ".join(_field_text(f) for f in self.fields) + ")"
        return text


_PLAIN_FIELD = re.compile(r"[!#-'+-~]+\Z")


def _field_text(name: str) -> str:
    if _PLAIN_FIELD.match(name) and "]" not in name and "%" not in name and "*" not in name:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One FETCH data item.

    name: FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE, UID, MODSEQ,
        BODY, BINARY, BINARY.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT (".PEEK" removed).
    section: set for every item that returns message content or its size: BODY[...],
        BINARY[...], BINARY.SIZE[...], and RFC822 (= BODY[]), RFC822.HEADER
        (= BODY.PEEK[HEADER]), RFC822.TEXT (= BODY[TEXT]). None for plain BODY (the
        non-extensible body structure) and the other items.
    partial: (origin, count) from <origin.count>, else None.
    peek: True for BODY.PEEK / BINARY.PEEK / RFC822.HEADER (do not set \\Seen).
    response_name: the item name for the response, e.g. "BODY[HEADER.FIELDS (FROM)]<0>"
        for BODY.PEEK[header.fields (From)]<0.100> (RFC 3501 7.4.2: PEEK dropped, partial
        shown as its origin only).
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False
    response_name: str = ""

    @property
    def sets_seen(self) -> bool:
        """True when fetching this item sets \\Seen (RFC 3501 6.4.5)."""
        return self.section is not None and not self.peek and self.name != "BINARY.SIZE"


def _item(name: str) -> FetchItem:
    return FetchItem(name, response_name=name)


_SIMPLE_ITEMS: dict[str, FetchItem] = {
    n: _item(n)
    for n in (
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
        "BODY",
    )
}
_SIMPLE_ITEMS["RFC822"] = FetchItem("RFC822", Section(), response_name="RFC822")
_SIMPLE_ITEMS["RFC822.HEADER"] = FetchItem(
    "RFC822.HEADER", Section((), "HEADER"), peek=True, response_name="RFC822.HEADER"
)
_SIMPLE_ITEMS["RFC822.TEXT"] = FetchItem(
    "RFC822.TEXT", Section((), "TEXT"), response_name="RFC822.TEXT"
)

_FAST = tuple(_SIMPLE_ITEMS[n] for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE"))
FETCH_MACROS: Final[dict[str, tuple[FetchItem, ...]]] = {
    "FAST": _FAST,
    "ALL": (*_FAST, _SIMPLE_ITEMS["ENVELOPE"]),
    "FULL": (*_FAST, _SIMPLE_ITEMS["ENVELOPE"], _SIMPLE_ITEMS["BODY"]),
}


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)])), RFC 7162."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None
    seq_match: tuple[SeqSet, SeqSet] | None = None


class Spool:
    """Where the reader streams a big APPEND literal instead of holding it (see
    CommandReader.spool_factory): the session gives one per literal, the reader writes
    the literal's bytes into it as they arrive, and whoever ends up holding it (the
    command's handler, or the reader for a command that fails) calls discard() unless
    the data was taken over."""

    def write(self, data: bytes | bytearray) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SpooledLiteral:
    """A literal the reader streamed into a Spool: `size` octets as announced."""

    size: int
    spool: Spool
    binary: bool = False


#: A message literal: its bytes, or where they were streamed to.
LiteralData = bytes | SpooledLiteral


@dataclass(frozen=True, slots=True)
class CatText:
    """A CATENATE TEXT part (RFC 4469): a literal (literal8 with BINARY, RFC 3516)."""

    data: LiteralData
    binary: bool = False


@dataclass(frozen=True, slots=True)
class CatUrl:
    """A CATENATE URL part (RFC 4469): an IMAP URL (RFC 5092), relative or absolute."""

    url: str


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502). `catenate` holds
    the parts of a CATENATE message (RFC 4469); `data` is then b""."""

    flags: tuple[str, ...]
    date: dt.datetime | None
    data: LiteralData
    binary: bool = False  # sent as literal8 ~{n} (RFC 3516)
    catenate: tuple[CatText | CatUrl, ...] | None = None


class CommandArgs:
    """Base class of every command's arguments."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Capability(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Noop(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Logout(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Starttls(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Check(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Close(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Unselect(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Namespace(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Idle(CommandArgs):
    pass


@dataclass(frozen=True, slots=True)
class Login(CommandArgs):
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate(CommandArgs):
    """mechanism upper-case; initial_response is the decoded SASL-IR (RFC 4959): None when
    absent, b"" when sent as "="."""

    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Select(CommandArgs):
    """SELECT, and EXAMINE with readonly=True. condstore is True for (CONDSTORE) and also
    implied by QRESYNC."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None


#: EXAMINE arrives as Select(readonly=True); the alias is for readers of handler code.
Examine = Select


@dataclass(frozen=True, slots=True)
class Create(CommandArgs):
    """special_use: the (USE (\\Drafts ...)) of RFC 6154 CREATE-SPECIAL-USE."""

    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete(CommandArgs):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(CommandArgs):
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe(CommandArgs):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(CommandArgs):
    mailbox: str


@dataclass(frozen=True, slots=True)
class List(CommandArgs):
    """LIST, with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154).

    selection_opts: upper-case subset of LIST_SELECT_OPTIONS.
    return_opts: upper-case subset of LIST_RETURN_OPTIONS ("STATUS" when status_items).
    status_items: the RETURN (STATUS (...)) items, upper-case, else ().
    extended: True when any extended syntax was used (selection options, a pattern list or
        RETURN); the response then follows RFC 5258 (e.g. CHILDINFO).
    """

    reference: str
    patterns: tuple[str, ...]
    selection_opts: frozenset[str] = frozenset()
    return_opts: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub(CommandArgs):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status(CommandArgs):
    """items: upper-case, each in STATUS_ITEMS, in the order given."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append(CommandArgs):
    """messages: one per message (MULTIAPPEND sends several). The properties give the
    first message, for the common single-message case."""

    mailbox: str
    messages: tuple[AppendMessage, ...]

    @property
    def flags(self) -> tuple[str, ...]:
        return self.messages[0].flags

    @property
    def date(self) -> dt.datetime | None:
        return self.messages[0].date

    @property
    def message(self) -> LiteralData:
        return self.messages[0].data

    def spools(self) -> list[SpooledLiteral]:
        """Every streamed literal of the command (to discard the unused ones)."""
        found: list[SpooledLiteral] = []
        for m in self.messages:
            for data in [m.data, *(c.data for c in m.catenate or () if isinstance(c, CatText))]:
                if isinstance(data, SpooledLiteral):
                    found.append(data)
        return found


@dataclass(frozen=True, slots=True)
class Expunge(CommandArgs):
    """EXPUNGE (seqset None), or UID EXPUNGE set (RFC 4315) with uid=True."""

    seqset: SeqSet | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Search(CommandArgs):
    """key: the criteria tree (search.py). charset: the IMAP charset name as sent (upper),
    None when absent. return_opts: None for plain SEARCH (untagged SEARCH response); for
    ESEARCH (RFC 4731) a set from MIN MAX ALL COUNT SAVE, with RETURN () meaning {"ALL"}."""

    key: SearchKey
    charset: str | None = None
    return_opts: frozenset[str] | None = None
    uid: bool = False
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL low:high), RFC 5267 4.4


@dataclass(frozen=True, slots=True)
class Sort(CommandArgs):
    """SORT (RFC 5256) and ESORT/CONTEXT=SORT return options (RFC 5267). criteria: the
    sort program in order (sortthread.SortCriterion); return_opts None for plain SORT
    (untagged SORT response), else a set from MIN MAX ALL COUNT PARTIAL UPDATE CONTEXT."""

    criteria: tuple[SortCriterion, ...]
    key: SearchKey
    charset: str
    return_opts: frozenset[str] | None = None
    uid: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Thread(CommandArgs):
    """THREAD algorithm charset search-criteria (RFC 5256); algorithm upper-case."""

    algorithm: str
    key: SearchKey
    charset: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class CancelUpdate(CommandArgs):
    """CANCELUPDATE "tag" ... (RFC 5267 4.3): the tags of the searches to stop updating."""

    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fetch(CommandArgs):
    """items: in the order given, macros (ALL/FAST/FULL) expanded, duplicates kept; for
    UID FETCH the handler adds UID itself (RFC 3501 6.4.8). changedsince and vanished are
    the RFC 7162 modifiers (VANISHED only with UID FETCH and CHANGEDSINCE; CHANGEDSINCE
    also implies MODSEQ in the response)."""

    seqset: SeqSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Store(CommandArgs):
    """mode: "" replace (FLAGS), "+" add, "-" remove. flags: system flags spelled
    canonically (\\Seen), keywords as sent. unchangedsince: RFC 7162 modifier."""

    seqset: SeqSet
    mode: Literal["", "+", "-"]
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Copy(CommandArgs):
    seqset: SeqSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move(CommandArgs):
    seqset: SeqSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Id(CommandArgs):
    """params: field -> value from ID ("name" "x" ...) (RFC 2971), None for ID NIL."""

    params: dict[str, str | None] | None


@dataclass(frozen=True, slots=True)
class Enable(CommandArgs):
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GenUrlAuth(CommandArgs):
    """GENURLAUTH (RFC 4467): (url rump, mechanism) pairs, mechanism upper-case."""

    requests: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ResetKey(CommandArgs):
    """RESETKEY (RFC 4467): no mailbox resets every key of the user; mechanisms upper."""

    mailbox: str | None = None
    mechanisms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UrlFetch(CommandArgs):
    """URLFETCH (RFC 4467), with the RFC 5524 parameters: (url, upper-case params) per
    URL; params is None for a plain URL (the old response form)."""

    urls: tuple[tuple[str, tuple[str, ...] | None], ...]


URLFETCH_PARAMS: Final = frozenset({"BODYPARTSTRUCTURE", "BINARY", "BODY"})


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(CommandArgs):
    mailbox: str


@dataclass(frozen=True, slots=True)
class GetQuota(CommandArgs):
    root: str


STATUS_ITEMS: Final = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED"}
)
LIST_SELECT_OPTIONS: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
SEARCH_RETURN_OPTIONS: Final = frozenset(
    {"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"}
)
#: ESORT (RFC 5267 section 3) and CONTEXT=SORT return options, and SEARCHRES's SAVE.
SORT_RETURN_OPTIONS: Final = frozenset(
    {"MIN", "MAX", "ALL", "COUNT", "PARTIAL", "UPDATE", "CONTEXT", "SAVE"}
)
SYSTEM_FLAGS: Final = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


# ---------------------------------------------------------------------------------------
# Tokens

_SP: Final = 0x20
_DQUOTE: Final = 0x22
_OPEN: Final = 0x28
_CLOSE: Final = 0x29
_LBRACKET: Final = 0x5B
_RBRACKET: Final = 0x5D
_LT: Final = 0x3C
_LIT: Final = -2  # peek(): a literal comes next
_END: Final = -1  # peek(): nothing left

# Character classes are single-pass (no nested quantifiers), so hostile input cannot make
# them backtrack.
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 section 9): 7-bit only, so a tag with
# 8-bit bytes is no tag (answered "* BAD", never echoed mangled).
_TAG = re.compile(rb'[^(){ \x00-\x1f\x7f-\xff%*"\\+]+')
_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]]+')
_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\]+')
_LIST_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f"\\]+')
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE = re.compile(rb"\\(.)")
_NUMBER = re.compile(rb"[0-9]+")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_ITEM_NAME = re.compile(rb"[A-Za-z0-9.\-]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z0-9.]+")
_PARTIAL = re.compile(rb"<([0-9]{1,10})\.([0-9]{1,10})>")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_FLAG = re.compile(rb'\\?[^(){ \x00-\x1f\x7f-\xff%*"\\\]]+')
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9]|[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
# A literal announcement at the end of a line: {n}, {n+} (RFC 7888), ~{n} (RFC 3516).
_LITERAL_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_MARKER_WINDOW = 48

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class InvalidMailboxName(str):
    """A mailbox name or LIST pattern that is neither modified UTF-7 nor UTF-8, kept as
    sent. It is a well-formed astring, so the command is not BAD: the session answers NO
    (no mailbox can have such a name) and LIST/LSUB let the pattern match nothing."""

    __slots__ = ()

    reason = "Mailbox name is neither modified UTF-7 nor UTF-8"


def invalid_mailbox_name(args: CommandArgs) -> InvalidMailboxName | None:
    """The first argument of `args` that is an InvalidMailboxName, or None."""
    for name in getattr(args, "__dataclass_fields__", ()):
        value = getattr(args, name, None)
        if isinstance(value, InvalidMailboxName):
            return value
    return None


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
        return _LIT if self._i < len(self._lits) else _END

    def advance(self) -> None:
        self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self._i >= len(self._lits)

    def end(self) -> None:
        if not self.at_end():
            raise ValueError("Unexpected extra arguments")

    def sp(self, what: str = "space") -> None:
        if self.pos < len(self.line) and self.line[self.pos] == _SP:
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
        return self.match(_ATOM, what).decode("ascii", "replace")

    def word(self, what: str) -> str:
        """An atom, upper-cased (keywords, options, command names)."""
        return self.match(_ATOM, what).decode("ascii", "replace").upper()

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
        if c == _DQUOTE:
            return self.quoted(what)
        if c == _LIT:
            return self.literal(what)
        raise ValueError(f"Expected {what}")

    def astring(self, what: str) -> bytes:
        c = self.peek()
        if c == _DQUOTE:
            return self.quoted(what)
        if c == _LIT:
            return self.literal(what)
        return self.match(_ASTRING_ATOM, what)

    def nstring(self, what: str) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == b"NIL" and not _ATOM.match(
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
        return SeqSet.parse(self.match(_SEQSET, "sequence set"))

    def date(self) -> dt.date:
        quoted = self.accept(_DQUOTE)
        m = _DATE.match(self.line, self.pos)
        if m is None:
            raise ValueError("Expected date")
        self.pos = m.end()
        if quoted:
            self.expect(_DQUOTE, "date")
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
        self.expect(_OPEN, "flag list")
        flags: list[str] = []
        if not self.accept(_CLOSE):
            flags.append(self.flag())
            while self.accept(_SP):
                flags.append(self.flag())
            self.expect(_CLOSE, '")" after flags')
        return tuple(flags)

    def mailbox(self, what: str = "mailbox name") -> str:
        raw = self.astring(what)
        try:
            return utf8_mailbox_name(raw) if self.utf8 else mailbox_name(raw)
        except ValueError:
            return InvalidMailboxName(_text(raw))

    def list_mailbox(self) -> str:
        c = self.peek()
        raw = (
            self.string("mailbox pattern")
            if c in (_DQUOTE, _LIT)
            else self.match(_LIST_ATOM, "mailbox pattern")
        )
        if raw.upper() == b"INBOX":
            return _text(raw)
        try:
            return utf8_mailbox_name(raw) if self.utf8 else mailbox_name(raw)
        except ValueError:
            return InvalidMailboxName(_text(raw))

    def paren_words(self, what: str) -> list[str]:
        """'(' [atom *(SP atom)] ')', upper-cased."""
        self.expect(_OPEN, what)
        words: list[str] = []
        if not self.accept(_CLOSE):
            words.append(self.word(what))
            while self.accept(_SP):
                words.append(self.word(what))
            self.expect(_CLOSE, f'")" after {what}')
        return words

    def peek_word(self) -> str:
        """The upper-case atom at the cursor, without consuming it ("" if none)."""
        m = _ATOM.match(self.line, self.pos)
        return m.group().decode("ascii", "replace").upper() if m else ""

    def mark(self) -> int:
        return self.pos

    def reset(self, mark: int) -> None:
        self.pos = mark


# ---------------------------------------------------------------------------------------
# Command argument parsers: each starts right after the command name.

Parser = Callable[[Cursor, bool], CommandArgs]


def _no_args(cls: type[CommandArgs]) -> Parser:
    def parse(cur: Cursor, uid: bool) -> CommandArgs:
        return cls()

    return parse


def _parse_login(cur: Cursor, uid: bool) -> Login:
    cur.sp("user name")
    user = cur.astring("user name")
    cur.sp("password")
    return Login(_text(user), _text(cur.astring("password")))


def _parse_authenticate(cur: Cursor, uid: bool) -> Authenticate:
    cur.sp("authentication mechanism")
    mechanism = cur.word("authentication mechanism")
    if not cur.accept(_SP):
        return Authenticate(mechanism)
    token = cur.match(_BASE64, "initial response")
    if token == b"=":
        return Authenticate(mechanism, b"")
    if not token or len(token) % 4:
        raise ValueError("Invalid base64 initial response")
    try:
        return Authenticate(mechanism, base64.b64decode(token, validate=True))
    except binascii.Error:
        raise ValueError("Invalid base64 initial response") from None


def _parse_select_params(cur: Cursor, readonly: bool, mailbox: str) -> Select:
    condstore = False
    qresync = None
    cur.expect(_OPEN, "select parameters")
    while True:
        param = cur.word("select parameter")
        if param == "CONDSTORE":
            condstore = True
        elif param == "QRESYNC":
            cur.sp()
            qresync = _parse_qresync(cur)
            condstore = True
        else:
            raise ValueError(f"Unknown select parameter {param}")
        if not cur.accept(_SP):
            break
    cur.expect(_CLOSE, '")" after select parameters')
    return Select(mailbox, readonly, condstore, qresync)


def _parse_qresync(cur: Cursor) -> QresyncParams:
    cur.expect(_OPEN, "QRESYNC parameters")
    uidvalidity = cur.number("UIDVALIDITY", nz=True)
    cur.sp("mod-sequence")
    modseq = cur.number("mod-sequence", nz=True, bits=63)
    known_uids = None
    seq_match = None
    if cur.accept(_SP):
        if cur.peek() != _OPEN:
            known_uids = cur.seqset()
            if known_uids.saved:
                raise ValueError("Invalid known UIDs")
            if cur.accept(_SP):
                seq_match = _parse_seq_match(cur)
        else:
            seq_match = _parse_seq_match(cur)
    cur.expect(_CLOSE, '")" after QRESYNC parameters')
    return QresyncParams(uidvalidity, modseq, known_uids, seq_match)


def _parse_seq_match(cur: Cursor) -> tuple[SeqSet, SeqSet]:
    cur.expect(_OPEN, "sequence match data")
    seqs = cur.seqset()
    cur.sp("known UID set")
    uids = cur.seqset()
    cur.expect(_CLOSE, '")" after sequence match data')
    if seqs.saved or uids.saved or seqs.uses_star or uids.uses_star:
        raise ValueError("Invalid sequence match data")
    return seqs, uids


def _select_parser(readonly: bool) -> Parser:
    def parse(cur: Cursor, uid: bool) -> Select:
        cur.sp("mailbox name")
        mailbox = cur.mailbox()
        if cur.accept(_SP):
            return _parse_select_params(cur, readonly, mailbox)
        return Select(mailbox, readonly)

    return parse


def _parse_create(cur: Cursor, uid: bool) -> Create:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    special_use: tuple[str, ...] = ()
    if cur.accept(_SP):
        cur.expect(_OPEN, "create parameters")
        if cur.word("create parameter") != "USE":
            raise ValueError("Unknown create parameter")
        cur.sp()
        special_use = cur.flag_list()
        cur.expect(_CLOSE, '")" after create parameters')
    return Create(mailbox, special_use)


def _mailbox_parser(cls: Callable[[str], CommandArgs]) -> Parser:
    def parse(cur: Cursor, uid: bool) -> CommandArgs:
        cur.sp("mailbox name")
        return cls(cur.mailbox())

    return parse


def _parse_rename(cur: Cursor, uid: bool) -> Rename:
    cur.sp("mailbox name")
    old = cur.mailbox()
    cur.sp("new mailbox name")
    return Rename(old, cur.mailbox("new mailbox name"))


def _parse_list(cur: Cursor, uid: bool) -> List:
    cur.sp("mailbox reference")
    extended = False
    selection: frozenset[str] = frozenset()
    if cur.peek() == _OPEN:
        extended = True
        selection = frozenset(cur.paren_words("selection option"))
        unknown = selection - LIST_SELECT_OPTIONS
        if unknown:
            raise ValueError(f"Unknown selection option {min(unknown)}")
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            raise ValueError("RECURSIVEMATCH needs another selection option")
        cur.sp("mailbox reference")
    reference = cur.mailbox("mailbox reference")
    cur.sp("mailbox pattern")
    if cur.peek() == _OPEN:
        extended = True
        cur.advance()
        patterns = [cur.list_mailbox()]
        while cur.accept(_SP):
            patterns.append(cur.list_mailbox())
        cur.expect(_CLOSE, '")" after mailbox patterns')
    else:
        patterns = [cur.list_mailbox()]
    return_opts: set[str] = set()
    status_items: tuple[str, ...] = ()
    if cur.accept(_SP):
        extended = True
        if cur.word("RETURN") != "RETURN":
            raise ValueError("Expected RETURN")
        cur.sp("return options")
        cur.expect(_OPEN, "return options")
        if not cur.accept(_CLOSE):
            while True:
                opt = cur.word("return option")
                if opt not in LIST_RETURN_OPTIONS:
                    raise ValueError(f"Unknown return option {opt}")
                if opt == "STATUS":
                    cur.sp("status items")
                    status_items = _status_items(cur)
                return_opts.add(opt)
                if not cur.accept(_SP):
                    break
            cur.expect(_CLOSE, '")" after return options')
    return List(
        reference, tuple(patterns), selection, frozenset(return_opts), status_items, extended
    )


def _parse_lsub(cur: Cursor, uid: bool) -> Lsub:
    cur.sp("mailbox reference")
    reference = cur.mailbox("mailbox reference")
    cur.sp("mailbox pattern")
    return Lsub(reference, cur.list_mailbox())


def _status_items(cur: Cursor) -> tuple[str, ...]:
    items = cur.paren_words("status items")
    if not items:
        raise ValueError("Expected status items")
    for item in items:
        if item not in STATUS_ITEMS:
            raise ValueError(f"Unknown status item {item}")
    return tuple(items)


def _parse_status(cur: Cursor, uid: bool) -> Status:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    cur.sp("status items")
    return Status(mailbox, _status_items(cur))


def _parse_append(cur: Cursor, uid: bool) -> Append:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    messages: list[AppendMessage] = []
    while True:
        cur.sp("message literal")
        flags: tuple[str, ...] = ()
        date = None
        if cur.peek() == _OPEN:
            flags = cur.flag_list()
            cur.sp("message literal")
        if cur.peek() == _DQUOTE:
            date = cur.datetime()
            cur.sp("message literal")
        if cur.peek() != _LIT and cur.peek_word() == "CATENATE":
            cur.word("CATENATE")
            cur.sp("CATENATE parts")
            messages.append(AppendMessage(flags, date, b"", False, _catenate_parts(cur)))
        else:
            binary = cur.literal_is_binary()
            data = cur.message_literal("message literal", binary=True)
            messages.append(AppendMessage(flags, date, data, binary))
        if cur.peek() != _SP:
            return Append(mailbox, tuple(messages))


def _catenate_parts(cur: Cursor) -> tuple[CatText | CatUrl, ...]:
    """ "(" cat-part *(SP cat-part) ")" of RFC 4469 section 5."""
    cur.expect(_OPEN, "CATENATE parts")
    parts: list[CatText | CatUrl] = []
    while True:
        kind = cur.word("TEXT or URL")
        cur.sp("CATENATE part")
        if kind == "TEXT":
            binary = cur.literal_is_binary()
            parts.append(CatText(cur.message_literal("TEXT literal", binary=True), binary))
        elif kind == "URL":
            parts.append(CatUrl(_text(cur.astring("URL"))))
        else:
            raise ValueError(f"Unknown CATENATE part {kind}")
        if not cur.accept(_SP):
            break
    cur.expect(_CLOSE, '")" after CATENATE parts')
    return tuple(parts)


def _parse_expunge(cur: Cursor, uid: bool) -> Expunge:
    if not uid:
        return Expunge()
    cur.sp("sequence set")
    return Expunge(cur.seqset(), uid=True)


def _return_options(
    cur: Cursor, allowed: frozenset[str]
) -> tuple[frozenset[str], tuple[int, int] | None]:
    """'(' [option *(SP option)] ')' with PARTIAL low:high (RFC 5267 4.4), which may be
    given high:low; the range is returned ascending."""
    cur.expect(_OPEN, "return options")
    opts: set[str] = set()
    partial = None
    if not cur.accept(_CLOSE):
        while True:
            opt = cur.word("return option")
            if opt not in allowed:
                raise ValueError(f"Unknown return option {opt}")
            if opt == "PARTIAL":
                cur.sp("partial range")
                low = cur.number("partial range", nz=True)
                cur.expect(0x3A, "partial range low:high")
                high = cur.number("partial range", nz=True)
                partial = (min(low, high), max(low, high))
            opts.add(opt)
            if not cur.accept(_SP):
                break
        cur.expect(_CLOSE, '")" after return options')
    return frozenset(opts), partial


def _optional_return(
    cur: Cursor, allowed: frozenset[str], what: str
) -> tuple[frozenset[str] | None, tuple[int, int] | None]:
    """SEARCH's or SORT's "RETURN (...)" and the space after it, when present: the options
    (CONTEXT only asks for what the others give; none means ALL, RFC 4731 3.1) and PARTIAL's
    range."""
    if cur.peek_word() != "RETURN":
        return None, None
    cur.word("RETURN")
    cur.sp("return options")
    opts, partial = _return_options(cur, allowed)
    cur.sp(what)
    return opts - {"CONTEXT"} or frozenset({"ALL"}), partial


def _parse_search(cur: Cursor, uid: bool) -> Search:
    cur.sp("search criteria")
    return_opts, partial = _optional_return(cur, SEARCH_RETURN_OPTIONS, "search criteria")
    charset = None
    codec = None
    if cur.peek_word() == "CHARSET":
        cur.word("CHARSET")
        cur.sp("charset")
        charset = cur.astring("charset").decode("ascii", "replace").upper()
        codec = lookup_charset(charset)
        cur.sp("search criteria")
    key = parse_search_program(cur, codec)
    return Search(key, charset, return_opts, uid, partial)


def _search_charset(cur: Cursor) -> tuple[str, str]:
    """The charset SORT and THREAD require before their criteria: (name, Python codec)."""
    charset = cur.astring("charset").decode("ascii", "replace").upper()
    if cur.peek() != _SP:
        raise ValueError("Expected charset and search criteria")
    return charset, lookup_charset(charset)


def _parse_sort(cur: Cursor, uid: bool) -> Sort:
    cur.sp("sort criteria")
    return_opts, partial = _optional_return(cur, SORT_RETURN_OPTIONS, "sort criteria")
    cur.expect(_OPEN, "sort criteria")
    criteria: list[SortCriterion] = []
    while True:
        word = cur.word("sort key")
        reverse = word == "REVERSE"
        if reverse:
            cur.sp("sort key")
            word = cur.word("sort key")
        if word not in SORT_KEYS:
            raise ValueError(f"Unknown sort key {word}")
        criteria.append(SortCriterion(word, reverse))
        if not cur.accept(_SP):
            break
    cur.expect(_CLOSE, '")" after sort criteria')
    cur.sp("charset")
    charset, codec = _search_charset(cur)
    cur.sp("search criteria")
    key = parse_search_program(cur, codec)
    return Sort(tuple(criteria), key, charset, return_opts, uid, partial)


def _parse_thread(cur: Cursor, uid: bool) -> Thread:
    cur.sp("threading algorithm")
    algorithm = cur.word("threading algorithm")
    if algorithm not in THREAD_ALGORITHMS:
        raise ValueError(f"Unknown threading algorithm {algorithm}")
    cur.sp("charset")
    charset, codec = _search_charset(cur)
    cur.sp("search criteria")
    return Thread(algorithm, parse_search_program(cur, codec), charset, uid)


def _parse_cancelupdate(cur: Cursor, uid: bool) -> CancelUpdate:
    tags = []
    while True:
        cur.sp("tag")
        tags.append(_text(cur.string("tag")))
        if cur.peek() != _SP:
            return CancelUpdate(tuple(tags))


def _parse_fetch(cur: Cursor, uid: bool) -> Fetch:
    cur.sp("sequence set")
    seqset = cur.seqset()
    cur.sp("fetch items")
    if cur.accept(_OPEN):
        items = [_fetch_item(cur)]
        while cur.accept(_SP):
            items.append(_fetch_item(cur))
        cur.expect(_CLOSE, '")" after fetch items')
    else:
        mark = cur.mark()
        macro = FETCH_MACROS.get(cur.match(_ITEM_NAME, "fetch items").upper().decode())
        if macro is not None:
            items = list(macro)
        else:
            cur.reset(mark)
            items = [_fetch_item(cur)]
    changedsince = None
    vanished = False
    if cur.accept(_SP):
        cur.expect(_OPEN, "fetch modifiers")
        while True:
            modifier = cur.word("fetch modifier")
            if modifier == "CHANGEDSINCE":
                cur.sp("mod-sequence")
                changedsince = cur.number("mod-sequence", bits=63)
            elif modifier == "VANISHED":
                vanished = True
            else:
                raise ValueError(f"Unknown fetch modifier {modifier}")
            if not cur.accept(_SP):
                break
        cur.expect(_CLOSE, '")" after fetch modifiers')
        if vanished and (not uid or changedsince is None):
            raise ValueError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(seqset, tuple(items), changedsince, vanished, uid)


_SECTION_ITEMS = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})
_TEXT_SPECIFIERS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def _fetch_item(cur: Cursor) -> FetchItem:
    name = cur.match(_ITEM_NAME, "fetch item").upper().decode()
    if cur.peek() != _LBRACKET:
        item = _SIMPLE_ITEMS.get(name)
        if item is None or name in _SECTION_ITEMS and name != "BODY":
            raise ValueError(f"Unknown fetch item {name}")
        return item
    if name not in _SECTION_ITEMS:
        raise ValueError(f"Unknown fetch item {name}")
    peek = name.endswith(".PEEK")
    base = name[:-5] if peek else name
    section = _section(cur, binary=base != "BODY")
    partial = None
    response_name = f"{base}[{section}]"
    if cur.peek() == _LT and base != "BINARY.SIZE":
        m = _PARTIAL.match(cur.line, cur.pos)
        if m is None:
            raise ValueError("Invalid partial <origin.count>")
        cur.pos = m.end()
        origin, count = int(m.group(1)), int(m.group(2))
        if count == 0 or origin > 0xFFFFFFFF or count > 0xFFFFFFFF:
            raise ValueError("Invalid partial <origin.count>")
        partial = (origin, count)
        response_name += f"<{origin}>"
    return FetchItem(base, section, partial, peek, response_name)


def parse_section(cur: Cursor) -> Section:
    """A body section "[...]" (RFC 3501 section 6.4.5), as IMAP URLs carry it."""
    return _section(cur, binary=False)


def _section(cur: Cursor, *, binary: bool) -> Section:
    cur.advance()  # "["
    if cur.accept(_RBRACKET):
        return Section()
    raw = cur.match(_SECTION_TEXT, "section")
    pieces = raw.split(b".")
    part: list[int] = []
    for piece in pieces:
        if not piece.isdigit():
            break
        if piece[0] == 0x30 or len(piece) > 10:
            raise ValueError("Invalid section part")
        part.append(int(piece))
    specifier = b".".join(pieces[len(part) :]).upper().decode()
    if binary and specifier:
        raise ValueError("BINARY takes a part number only")
    if specifier and specifier not in _TEXT_SPECIFIERS or not raw or raw.endswith(b"."):
        raise ValueError("Invalid section")
    if specifier == "MIME" and not part:
        raise ValueError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if specifier.startswith("HEADER.FIELDS"):
        cur.sp("header field list")
        cur.expect(_OPEN, "header field list")
        names = [cur.astring("header field name")]
        while cur.accept(_SP):
            names.append(cur.astring("header field name"))
        cur.expect(_CLOSE, '")" after header field names')
        fields = tuple(n.decode("ascii", "replace").upper() for n in names)
    cur.expect(_RBRACKET, '"]" after section')
    return Section(tuple(part), specifier, fields)


def _parse_store(cur: Cursor, uid: bool) -> Store:
    cur.sp("sequence set")
    seqset = cur.seqset()
    cur.sp("store item")
    unchangedsince = None
    if cur.accept(_OPEN):
        if cur.word("store modifier") != "UNCHANGEDSINCE":
            raise ValueError("Unknown store modifier")
        cur.sp("mod-sequence")
        unchangedsince = cur.number("mod-sequence", bits=63)
        cur.expect(_CLOSE, '")" after store modifiers')
        cur.sp("store item")
    item = cur.word("store item")
    mode = item[0] if item[:1] in ("+", "-") else ""
    base = item[len(mode) :]
    silent = base.endswith(".SILENT")
    if (base[:-7] if silent else base) != "FLAGS":
        raise ValueError("Expected FLAGS, +FLAGS or -FLAGS")
    cur.sp("flags")
    if cur.peek() == _OPEN:
        flags = cur.flag_list()
    else:
        flag_list = [cur.flag()]
        while cur.accept(_SP):
            flag_list.append(cur.flag())
        flags = tuple(flag_list)
    return Store(seqset, mode, silent, flags, unchangedsince, uid)  # type: ignore[arg-type]


def _copy_parser(cls: type[Copy] | type[Move]) -> Parser:
    def parse(cur: Cursor, uid: bool) -> CommandArgs:
        cur.sp("sequence set")
        seqset = cur.seqset()
        cur.sp("mailbox name")
        return cls(seqset, cur.mailbox(), uid)

    return parse


def _parse_id(cur: Cursor, uid: bool) -> Id:
    cur.sp("ID parameters")
    if cur.peek() != _OPEN:
        if cur.word("ID parameters") != "NIL":
            raise ValueError("Expected ID parameters")
        return Id(None)
    cur.advance()
    params: dict[str, str | None] = {}
    if not cur.accept(_CLOSE):
        while True:
            key = _text(cur.string("ID field name"))
            cur.sp("ID field value")
            value = cur.nstring("ID field value")
            params[key] = None if value is None else _text(value)
            if not cur.accept(_SP):
                break
        cur.expect(_CLOSE, '")" after ID parameters')
    return Id(params)


def _parse_enable(cur: Cursor, uid: bool) -> Enable:
    cur.sp("capability")
    caps = [cur.word("capability")]
    while cur.accept(_SP):
        caps.append(cur.word("capability"))
    return Enable(tuple(caps))


def _parse_genurlauth(cur: Cursor, uid: bool) -> GenUrlAuth:
    requests = []
    while True:
        cur.sp("URL")
        url = _text(cur.astring("URL"))
        cur.sp("mechanism")
        requests.append((url, cur.word("mechanism")))
        if cur.peek() != _SP:
            return GenUrlAuth(tuple(requests))


def _parse_resetkey(cur: Cursor, uid: bool) -> ResetKey:
    if not cur.accept(_SP):
        return ResetKey()
    mailbox = cur.mailbox()
    mechanisms = []
    while cur.accept(_SP):
        mechanisms.append(cur.word("mechanism"))
    return ResetKey(mailbox, tuple(mechanisms))


def _parse_urlfetch(cur: Cursor, uid: bool) -> UrlFetch:
    urls: list[tuple[str, tuple[str, ...] | None]] = []
    while True:
        cur.sp("URL")
        if cur.accept(_OPEN):  # RFC 5524: "(" url *(SP param) ")"
            url = _text(cur.astring("URL"))
            params = []
            while cur.accept(_SP):
                param = cur.word("URLFETCH parameter")
                if param not in URLFETCH_PARAMS:
                    raise ValueError(f"Unknown URLFETCH parameter {param}")
                params.append(param)
            cur.expect(_CLOSE, '")" after URLFETCH parameters')
            if "BINARY" in params and "BODY" in params:
                raise ValueError("BINARY and BODY exclude each other")  # RFC 5524
            urls.append((url, tuple(params)))
        else:
            urls.append((_text(cur.astring("URL")), None))
        if cur.peek() != _SP:
            return UrlFetch(tuple(urls))


def _parse_getquota(cur: Cursor, uid: bool) -> GetQuota:
    cur.sp("quota root")
    return GetQuota(_text(cur.astring("quota root")))


_PARSERS: dict[str, Parser] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(Starttls),
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "NAMESPACE": _no_args(Namespace),
    "IDLE": _no_args(Idle),
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "SELECT": _select_parser(readonly=False),
    "EXAMINE": _select_parser(readonly=True),
    "CREATE": _parse_create,
    "DELETE": _mailbox_parser(Delete),
    "RENAME": _parse_rename,
    "SUBSCRIBE": _mailbox_parser(Subscribe),
    "UNSUBSCRIBE": _mailbox_parser(Unsubscribe),
    "LIST": _parse_list,
    "LSUB": _parse_lsub,
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "EXPUNGE": _parse_expunge,
    "SEARCH": _parse_search,
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _copy_parser(Copy),
    "MOVE": _copy_parser(Move),
    "ID": _parse_id,
    "ENABLE": _parse_enable,
    "GETQUOTAROOT": _mailbox_parser(GetQuotaRoot),
    "GETQUOTA": _parse_getquota,
    "GENURLAUTH": _parse_genurlauth,
    "RESETKEY": _parse_resetkey,
    "URLFETCH": _parse_urlfetch,
}
_PARSERS["SORT"] = _parse_sort
_PARSERS["THREAD"] = _parse_thread
_PARSERS["CANCELUPDATE"] = _parse_cancelupdate
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"}) | {
    "SORT",
    "THREAD",
}

#: Every command name the parser knows (UID forms are "UID" + one of UID_COMMANDS).
COMMANDS: Final = frozenset(_PARSERS) | {"UID"}
UID_COMMANDS: Final = _UID_COMMANDS


def _head(cur: Cursor) -> tuple[str | None, str | None, Parser | ParseError, bool]:
    """Tag, command name, and its parser (or the ParseError to report), uid flag."""
    m = _TAG.match(cur.line)
    if m is None or cur.line[m.end() : m.end() + 1] not in (b"", b" "):
        return None, None, ParseError(None, "Invalid tag"), False
    tag = m.group().decode("ascii", "replace")
    cur.pos = m.end()
    if not cur.accept(_SP) or (m := _ATOM.match(cur.line, cur.pos)) is None:
        return tag, None, ParseError(tag, "Missing command"), False
    cur.pos = m.end()
    name = m.group().decode("ascii", "replace").upper()
    if name == "UID":
        sub = None
        if cur.accept(_SP) and (m := _ATOM.match(cur.line, cur.pos)) is not None:
            cur.pos = m.end()
            sub = m.group().decode("ascii", "replace").upper()
        if sub not in _UID_COMMANDS:
            return tag, None, ParseError(tag, "Unknown UID command"), True
        return tag, f"UID {sub}", _PARSERS[sub], True
    parser = _PARSERS.get(name)
    if parser is None:
        return tag, None, ParseError(tag, "Unknown command"), False
    return tag, name, parser, False


def parse_command(
    segs: list[bytes], lits: list[tuple[LiteralData, bool]] | None = None, utf8_names: bool = False
) -> Event:
    """Parse one complete command (CRLFs and literal markers removed; see Cursor).
    utf8_names: mailbox names are UTF-8 rather than modified UTF-7 (IMAP4rev2)."""
    cur = Cursor(segs, lits, utf8_names)
    tag, name, parser, uid = _head(cur)
    if isinstance(parser, ParseError):
        return parser
    assert tag is not None and name is not None
    try:
        args = parser(cur, uid)
        cur.end()
    except BadCharsetError as exc:
        return BadCharset(tag, name, exc.charset)
    except ValueError as exc:
        return ParseError(tag, str(exc), name)
    return Command(tag, name, args)


def parse_line(data: bytes) -> Event:
    """Parse one command given as bytes with its literals but without the final CRLF
    (b"a LOGIN {3}\\r\\nbob pw"). For tests and tools; the server uses CommandReader."""
    reader = CommandReader(max_command_size=1 << 30, max_literal_size=1 << 30)
    reader.feed(data + b"\r\n")
    for event in reader.events():
        if not isinstance(event, NeedContinuation):
            return event
    raise ValueError("incomplete command")


# ---------------------------------------------------------------------------------------
# The reader

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
        m = _TAG.match(data)
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
        line = bytes(buf[:i])
        del buf[: i + 1]
        self._scan = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.line_mode:
            if len(line) > self.max_command_size:
                return CommandTooLong(None)
            return RawLine(line)
        if not self._segs and not line:
            return None  # blank lines between commands are ignored
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
            self._reset_command(drop=False)
            event = parse_command(segs, lits, self.utf8_names)
            if not isinstance(event, Command):
                _discard_spools(lits)
            return event
        start, size, nonsync, binary = marker
        seg = line[:start]
        if not self._segs:
            # Refuse a literal for a command that is already known to be bad, rather than
            # asking the client for data that will be thrown away (RFC 3501 7.5).
            cur = Cursor([seg])
            tag, name, parser, _uid = _head(cur)
            if isinstance(parser, ParseError):
                self._refuse(marker)
                return parser
            self._tag = tag
            self._name = name
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
