"""IMAP requests as the parser hands them over: the reader's events (`Command`, `ParseError`,
...) and one frozen dataclass per command's arguments (`Fetch`, `Store`, `Search`, ...).

Nothing here parses: the types are what a session dispatches on (server/backend/imap,
server/frontend/imap.py), so they depend on no grammar and no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal

from server.protocols.imap.search import SearchKey
from server.protocols.imap.seqset import SeqSet
from server.protocols.imap.sortthread import SortCriterion

CONTINUATION_TEXT: Final = "Ready for additional command text."


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
class Compress(CommandArgs):
    """COMPRESS (RFC 4978): the mechanism upper-case (only DEFLATE is defined)."""

    mechanism: str


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


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(CommandArgs):
    mailbox: str


@dataclass(frozen=True, slots=True)
class GetQuota(CommandArgs):
    root: str


@dataclass(frozen=True)
class Group:
    filter: str  # one of parser.NOTIFY_FILTERS
    mailboxes: tuple[str, ...]  # for SUBTREE and MAILBOXES
    events: frozenset[str]


@dataclass(frozen=True)
class Notify(CommandArgs):
    status: bool = False
    groups: tuple[Group, ...] = ()  # empty: NOTIFY NONE


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
