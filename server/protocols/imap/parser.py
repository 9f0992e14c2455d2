"""IMAP command grammar: one complete command (its lines and literals, as the reader
assembled them) in, one `requests` event out - a `Command` with typed arguments, or the
`ParseError`/`BadCharset` to answer.

Mailbox names are decoded from modified UTF-7 (raw 8-bit UTF-8 is also accepted) and any
case of "INBOX" becomes "INBOX"; LIST/LSUB patterns are decoded but not normalized.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from server.protocols import sasl
from server.protocols.imap.lexer import (
    ATOM,
    CLOSE,
    DQUOTE,
    LBRACKET,
    LIT,
    LT,
    OPEN,
    RBRACKET,
    SP,
    TAG,
    Cursor,
    as_text,
)
from server.protocols.imap.requests import (
    Append,
    AppendMessage,
    Authenticate,
    BadCharset,
    CancelUpdate,
    Capability,
    CatText,
    CatUrl,
    Check,
    Close,
    Command,
    CommandArgs,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Event,
    Expunge,
    Fetch,
    FetchItem,
    GenUrlAuth,
    GetQuota,
    GetQuotaRoot,
    Group,
    Id,
    Idle,
    List,
    LiteralData,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Notify,
    ParseError,
    QresyncParams,
    Rename,
    ResetKey,
    Search,
    Section,
    Select,
    Sort,
    Starttls,
    Status,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
    UrlFetch,
)
from server.protocols.imap.search import BadCharsetError, lookup_charset, parse_search_program
from server.protocols.imap.seqset import SeqSet
from server.protocols.imap.sortthread import SORT_KEYS, THREAD_ALGORITHMS, SortCriterion

_ITEM_NAME = re.compile(rb"[A-Za-z0-9.\-]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z0-9.]+")
_PARTIAL = re.compile(rb"<([0-9]{1,10})\.([0-9]{1,10})>")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


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

_MACROS: Final = {name.encode(): items for name, items in FETCH_MACROS.items()}

URLFETCH_PARAMS: Final = frozenset({"BODYPARTSTRUCTURE", "BINARY", "BODY"})

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
    return Login(as_text(user), as_text(cur.astring("password")))


def _parse_authenticate(cur: Cursor, uid: bool) -> Authenticate:
    cur.sp("authentication mechanism")
    mechanism = cur.word("authentication mechanism")
    if not cur.accept(SP):
        return Authenticate(mechanism)
    token = cur.match(_BASE64, "initial response")
    if token == b"=":
        return Authenticate(mechanism, b"")
    if not token or len(token) % 4:
        raise ValueError("Invalid base64 initial response")
    try:
        return Authenticate(mechanism, sasl.decode_response(token))
    except sasl.SaslError:
        raise ValueError("Invalid base64 initial response") from None


def _parse_compress(cur: Cursor, uid: bool) -> Compress:
    # RFC 4978 section 5: compress = "COMPRESS" SP algorithm. An unknown algorithm is
    # still a well-formed command; the session answers it BAD as section 3 asks.
    cur.sp("compression mechanism")
    return Compress(cur.word("compression mechanism"))


def _parse_select_params(cur: Cursor, readonly: bool, mailbox: str) -> Select:
    condstore = False
    qresync = None
    cur.expect(OPEN, "select parameters")
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
        if not cur.accept(SP):
            break
    cur.expect(CLOSE, '")" after select parameters')
    return Select(mailbox, readonly, condstore, qresync)


def _parse_qresync(cur: Cursor) -> QresyncParams:
    cur.expect(OPEN, "QRESYNC parameters")
    uidvalidity = cur.number("UIDVALIDITY", nz=True)
    cur.sp("mod-sequence")
    modseq = cur.number("mod-sequence", nz=True, bits=63)
    known_uids = None
    seq_match = None
    if cur.accept(SP):
        if cur.peek() != OPEN:
            known_uids = cur.seqset()
            if known_uids.saved:
                raise ValueError("Invalid known UIDs")
            if cur.accept(SP):
                seq_match = _parse_seq_match(cur)
        else:
            seq_match = _parse_seq_match(cur)
    cur.expect(CLOSE, '")" after QRESYNC parameters')
    return QresyncParams(uidvalidity, modseq, known_uids, seq_match)


def _parse_seq_match(cur: Cursor) -> tuple[SeqSet, SeqSet]:
    cur.expect(OPEN, "sequence match data")
    seqs = cur.seqset()
    cur.sp("known UID set")
    uids = cur.seqset()
    cur.expect(CLOSE, '")" after sequence match data')
    if seqs.saved or uids.saved or seqs.uses_star or uids.uses_star:
        raise ValueError("Invalid sequence match data")
    return seqs, uids


def _select_parser(readonly: bool) -> Parser:
    def parse(cur: Cursor, uid: bool) -> Select:
        cur.sp("mailbox name")
        mailbox = cur.mailbox()
        if cur.accept(SP):
            return _parse_select_params(cur, readonly, mailbox)
        return Select(mailbox, readonly)

    return parse


def _parse_create(cur: Cursor, uid: bool) -> Create:
    cur.sp("mailbox name")
    mailbox = cur.mailbox()
    special_use: tuple[str, ...] = ()
    if cur.accept(SP):
        cur.expect(OPEN, "create parameters")
        if cur.word("create parameter") != "USE":
            raise ValueError("Unknown create parameter")
        cur.sp()
        special_use = cur.flag_list()
        cur.expect(CLOSE, '")" after create parameters')
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
    if cur.peek() == OPEN:
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
    if cur.peek() == OPEN:
        extended = True
        cur.advance()
        patterns = [cur.list_mailbox()]
        while cur.accept(SP):
            patterns.append(cur.list_mailbox())
        cur.expect(CLOSE, '")" after mailbox patterns')
    else:
        patterns = [cur.list_mailbox()]
    return_opts: set[str] = set()
    status_items: tuple[str, ...] = ()
    if cur.accept(SP):
        extended = True
        if cur.word("RETURN") != "RETURN":
            raise ValueError("Expected RETURN")
        cur.sp("return options")
        cur.expect(OPEN, "return options")
        if not cur.accept(CLOSE):
            while True:
                opt = cur.word("return option")
                if opt not in LIST_RETURN_OPTIONS:
                    raise ValueError(f"Unknown return option {opt}")
                if opt == "STATUS":
                    cur.sp("status items")
                    status_items = _status_items(cur)
                return_opts.add(opt)
                if not cur.accept(SP):
                    break
            cur.expect(CLOSE, '")" after return options')
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
        if cur.peek() == OPEN:
            flags = cur.flag_list()
            cur.sp("message literal")
        if cur.peek() == DQUOTE:
            date = cur.datetime()
            cur.sp("message literal")
        if cur.peek() != LIT and cur.peek_word() == "CATENATE":
            cur.word("CATENATE")
            cur.sp("CATENATE parts")
            messages.append(AppendMessage(flags, date, b"", False, _catenate_parts(cur)))
        else:
            binary = cur.literal_is_binary()
            data = cur.message_literal("message literal", binary=True)
            messages.append(AppendMessage(flags, date, data, binary))
        if cur.peek() != SP:
            return Append(mailbox, tuple(messages))


def _catenate_parts(cur: Cursor) -> tuple[CatText | CatUrl, ...]:
    """ "(" cat-part *(SP cat-part) ")" of RFC 4469 section 5."""
    cur.expect(OPEN, "CATENATE parts")
    parts: list[CatText | CatUrl] = []
    while True:
        kind = cur.word("TEXT or URL")
        cur.sp("CATENATE part")
        if kind == "TEXT":
            binary = cur.literal_is_binary()
            parts.append(CatText(cur.message_literal("TEXT literal", binary=True), binary))
        elif kind == "URL":
            parts.append(CatUrl(as_text(cur.astring("URL"))))
        else:
            raise ValueError(f"Unknown CATENATE part {kind}")
        if not cur.accept(SP):
            break
    cur.expect(CLOSE, '")" after CATENATE parts')
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
    cur.expect(OPEN, "return options")
    opts: set[str] = set()
    partial = None
    if not cur.accept(CLOSE):
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
            if not cur.accept(SP):
                break
        cur.expect(CLOSE, '")" after return options')
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
    if cur.peek() != SP:
        raise ValueError("Expected charset and search criteria")
    return charset, lookup_charset(charset)


def _parse_sort(cur: Cursor, uid: bool) -> Sort:
    cur.sp("sort criteria")
    return_opts, partial = _optional_return(cur, SORT_RETURN_OPTIONS, "sort criteria")
    cur.expect(OPEN, "sort criteria")
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
        if not cur.accept(SP):
            break
    cur.expect(CLOSE, '")" after sort criteria')
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
        tags.append(as_text(cur.string("tag")))
        if cur.peek() != SP:
            return CancelUpdate(tuple(tags))


def _parse_fetch(cur: Cursor, uid: bool) -> Fetch:
    cur.sp("sequence set")
    seqset = cur.seqset()
    cur.sp("fetch items")
    if cur.accept(OPEN):
        items = [_fetch_item(cur)]
        while cur.accept(SP):
            items.append(_fetch_item(cur))
        cur.expect(CLOSE, '")" after fetch items')
    else:
        m = _ITEM_NAME.match(cur.line, cur.pos)
        if m is None:
            raise ValueError("Expected fetch items")
        macro = _MACROS.get(m.group().upper())
        if macro is not None:
            cur.pos = m.end()
            items = list(macro)
        else:
            items = [_fetch_item(cur)]
    changedsince = None
    vanished = False
    if cur.accept(SP):
        cur.expect(OPEN, "fetch modifiers")
        while True:
            modifier = cur.word("fetch modifier")
            if modifier == "CHANGEDSINCE":
                cur.sp("mod-sequence")
                changedsince = cur.number("mod-sequence", bits=63)
            elif modifier == "VANISHED":
                vanished = True
            else:
                raise ValueError(f"Unknown fetch modifier {modifier}")
            if not cur.accept(SP):
                break
        cur.expect(CLOSE, '")" after fetch modifiers')
        if vanished and (not uid or changedsince is None):
            raise ValueError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(seqset, tuple(items), changedsince, vanished, uid)


_SECTION_ITEMS = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})
_TEXT_SPECIFIERS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


# Fast path of _fetch_item: an item name (upper-case bytes) -> its FetchItem when no section
# follows, and the section items with an empty section ("BODY.PEEK[]"), as the general path
# would build them; test_imap_parser_fast compares the two.
_PLAIN_ITEMS: Final = {n.encode(): item for n, item in _SIMPLE_ITEMS.items()}
_EMPTY_SECTION_ITEMS: Final = {
    n.encode(): FetchItem(
        n.removesuffix(".PEEK"),
        Section(),
        None,
        n.endswith(".PEEK"),
        f"{n.removesuffix('.PEEK')}[]",
    )
    for n in _SECTION_ITEMS
}


def _fetch_item(cur: Cursor) -> FetchItem:
    line = cur.line
    m = _ITEM_NAME.match(line, cur.pos)
    if m is not None:
        end = m.end()
        nxt = line[end : end + 1]
        if nxt != b"[":
            item = _PLAIN_ITEMS.get(m.group().upper())
            if item is not None:
                cur.pos = end
                return item
        elif line[end + 1 : end + 2] == b"]" and line[end + 2 : end + 3] != b"<":
            item = _EMPTY_SECTION_ITEMS.get(m.group().upper())
            if item is not None:
                cur.pos = end + 2
                return item
    return _fetch_item_general(cur)


def _fetch_item_general(cur: Cursor) -> FetchItem:
    name = cur.match(_ITEM_NAME, "fetch item").upper().decode()
    if cur.peek() != LBRACKET:
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
    if cur.peek() == LT and base != "BINARY.SIZE":
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
    if cur.accept(RBRACKET):
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
        cur.expect(OPEN, "header field list")
        names = [cur.astring("header field name")]
        while cur.accept(SP):
            names.append(cur.astring("header field name"))
        cur.expect(CLOSE, '")" after header field names')
        fields = tuple(n.decode("ascii", "replace").upper() for n in names)
    cur.expect(RBRACKET, '"]" after section')
    return Section(tuple(part), specifier, fields)


def _parse_store(cur: Cursor, uid: bool) -> Store:
    cur.sp("sequence set")
    seqset = cur.seqset()
    cur.sp("store item")
    unchangedsince = None
    if cur.accept(OPEN):
        if cur.word("store modifier") != "UNCHANGEDSINCE":
            raise ValueError("Unknown store modifier")
        cur.sp("mod-sequence")
        unchangedsince = cur.number("mod-sequence", bits=63)
        cur.expect(CLOSE, '")" after store modifiers')
        cur.sp("store item")
    item = cur.word("store item")
    mode = item[0] if item[:1] in ("+", "-") else ""
    base = item[len(mode) :]
    silent = base.endswith(".SILENT")
    if (base[:-7] if silent else base) != "FLAGS":
        raise ValueError("Expected FLAGS, +FLAGS or -FLAGS")
    cur.sp("flags")
    if cur.peek() == OPEN:
        flags = cur.flag_list()
    else:
        flag_list = [cur.flag()]
        while cur.accept(SP):
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
    if cur.peek() != OPEN:
        if cur.word("ID parameters") != "NIL":
            raise ValueError("Expected ID parameters")
        return Id(None)
    cur.advance()
    params: dict[str, str | None] = {}
    if not cur.accept(CLOSE):
        while True:
            key = as_text(cur.string("ID field name"))
            cur.sp("ID field value")
            value = cur.nstring("ID field value")
            params[key] = None if value is None else as_text(value)
            if not cur.accept(SP):
                break
        cur.expect(CLOSE, '")" after ID parameters')
    return Id(params)


def _parse_enable(cur: Cursor, uid: bool) -> Enable:
    cur.sp("capability")
    caps = [cur.word("capability")]
    while cur.accept(SP):
        caps.append(cur.word("capability"))
    return Enable(tuple(caps))


def _parse_genurlauth(cur: Cursor, uid: bool) -> GenUrlAuth:
    requests = []
    while True:
        cur.sp("URL")
        url = as_text(cur.astring("URL"))
        cur.sp("mechanism")
        requests.append((url, cur.word("mechanism")))
        if cur.peek() != SP:
            return GenUrlAuth(tuple(requests))


def _parse_resetkey(cur: Cursor, uid: bool) -> ResetKey:
    if not cur.accept(SP):
        return ResetKey()
    mailbox = cur.mailbox()
    mechanisms = []
    while cur.accept(SP):
        mechanisms.append(cur.word("mechanism"))
    return ResetKey(mailbox, tuple(mechanisms))


def _parse_urlfetch(cur: Cursor, uid: bool) -> UrlFetch:
    urls: list[tuple[str, tuple[str, ...] | None]] = []
    while True:
        cur.sp("URL")
        if cur.accept(OPEN):  # RFC 5524: "(" url *(SP param) ")"
            url = as_text(cur.astring("URL"))
            params = []
            while cur.accept(SP):
                param = cur.word("URLFETCH parameter")
                if param not in URLFETCH_PARAMS:
                    raise ValueError(f"Unknown URLFETCH parameter {param}")
                params.append(param)
            cur.expect(CLOSE, '")" after URLFETCH parameters')
            if "BINARY" in params and "BODY" in params:
                raise ValueError("BINARY and BODY exclude each other")  # RFC 5524
            urls.append((url, tuple(params)))
        else:
            urls.append((as_text(cur.astring("URL")), None))
        if cur.peek() != SP:
            return UrlFetch(tuple(urls))


def _parse_getquota(cur: Cursor, uid: bool) -> GetQuota:
    cur.sp("quota root")
    return GetQuota(as_text(cur.astring("quota root")))


#: NOTIFY (RFC 5465) filters, and the event names in their RFC spelling (matched in any case).
NOTIFY_FILTERS: Final = (
    "SELECTED",
    "SELECTED-DELAYED",
    "INBOXES",
    "PERSONAL",
    "SUBSCRIBED",
    "SUBTREE",
    "MAILBOXES",
)
_NOTIFY_EVENTS: Final = {
    e.upper(): e
    for e in (
        "MessageNew",
        "MessageExpunge",
        "FlagChange",
        "AnnotationChange",
        "MailboxName",
        "SubscriptionChange",
        "MailboxMetadataChange",
        "ServerMetadataChange",
    )
}


def _parse_mailboxes(cur: Cursor) -> tuple[str, ...]:
    cur.sp("mailbox")
    if not cur.accept(OPEN):
        return (cur.mailbox(),)
    names = [cur.mailbox()]
    while cur.accept(SP):
        names.append(cur.mailbox())
    cur.expect(CLOSE, '")" after the mailboxes')
    return tuple(names)


def _skip_fetch_atts(cur: Cursor) -> None:
    """MessageNew's "(" fetch-att *(SP fetch-att) ")": brackets and parentheses balanced."""
    depth = 0
    while True:
        c = cur.peek()
        if c < 0:
            raise ValueError("Unterminated fetch attributes")
        cur.advance()
        if c == OPEN:
            depth += 1
        elif c == CLOSE:
            depth -= 1
            if depth == 0:
                return


def _parse_events(cur: Cursor) -> frozenset[str]:
    cur.sp("events")
    if cur.peek_word() == "NONE":
        cur.word("events")
        return frozenset()
    cur.expect(OPEN, '"(" or NONE for the events')
    events: list[str] = []
    while True:
        word = cur.word("event")
        event = _NOTIFY_EVENTS.get(word, word)
        events.append(event)
        mark = cur.mark()
        if event == "MessageNew" and cur.accept(SP) and cur.peek() == OPEN:
            _skip_fetch_atts(cur)
        else:
            cur.reset(mark)
        if cur.accept(CLOSE):
            return frozenset(events)
        cur.sp("event")


def _parse_notify(cur: Cursor, uid: bool) -> Notify:
    cur.sp("NONE or SET")
    verb = cur.word("NONE or SET")
    if verb == "NONE":
        return Notify()
    if verb != "SET":
        raise ValueError("Expected NONE or SET")
    cur.sp("event groups")
    status = cur.peek_word() == "STATUS"
    if status:
        cur.word("STATUS")
        cur.sp("event groups")
    groups = []
    while True:
        cur.expect(OPEN, '"(" to start an event group')
        name = cur.word("filter")
        if name not in NOTIFY_FILTERS:
            raise ValueError(f"Unknown filter {name}")
        boxes = _parse_mailboxes(cur) if name in ("SUBTREE", "MAILBOXES") else ()
        groups.append(Group(name, boxes, _parse_events(cur)))
        cur.expect(CLOSE, '")" to end the event group')
        if not cur.accept(SP):
            return Notify(status, tuple(groups))


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
    "COMPRESS": _parse_compress,
    "GETQUOTAROOT": _mailbox_parser(GetQuotaRoot),
    "GETQUOTA": _parse_getquota,
    "GENURLAUTH": _parse_genurlauth,
    "RESETKEY": _parse_resetkey,
    "URLFETCH": _parse_urlfetch,
    "NOTIFY": _parse_notify,
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


# Upper-case command names as bytes -> str, to skip a decode per command. bytes.upper()
# changes only ASCII letters, as str.upper() does on the ASCII-decoded name.
_COMMAND_NAMES: Final = {n.encode(): n for n in (*_PARSERS, "UID")}
_UID_NAMES: Final = {n.encode(): f"UID {n}" for n in _UID_COMMANDS}
# head()'s common case in one match: tag SP name [SP name], the same character classes as
# TAG and ATOM; anything else (an unknown name, a bad tag) goes to _head_general.
_HEAD: Final = re.compile(TAG.pattern + b" (" + ATOM.pattern + b")(?: (" + ATOM.pattern + b"))?")


def head(cur: Cursor) -> tuple[str | None, str | None, Parser | ParseError, bool]:
    """Tag, command name, and its parser (or the ParseError to report), uid flag."""
    line = cur.line
    m = _HEAD.match(line)
    if m is not None:
        name = _COMMAND_NAMES.get(m.group(1).upper())
        if name is not None:
            if name != "UID":
                cur.pos = m.end(1)
                return line[: m.start(1) - 1].decode("ascii"), name, _PARSERS[name], False
            sub = m.group(2)
            uid_name = _UID_NAMES.get(sub.upper()) if sub is not None else None
            if uid_name is not None:
                cur.pos = m.end()
                return (
                    line[: m.start(1) - 1].decode("ascii"),
                    uid_name,
                    _PARSERS[uid_name[4:]],
                    True,
                )
    return _head_general(cur)


def _head_general(cur: Cursor) -> tuple[str | None, str | None, Parser | ParseError, bool]:
    m = TAG.match(cur.line)
    if m is None or cur.line[m.end() : m.end() + 1] not in (b"", b" "):
        return None, None, ParseError(None, "Invalid tag"), False
    tag = m.group().decode("ascii", "replace")
    cur.pos = m.end()
    if not cur.accept(SP) or (m := ATOM.match(cur.line, cur.pos)) is None:
        return tag, None, ParseError(tag, "Missing command"), False
    cur.pos = m.end()
    raw = m.group().upper()
    name = _COMMAND_NAMES.get(raw) or raw.decode("ascii", "replace")
    if name == "UID":
        sub = None
        if cur.accept(SP) and (m := ATOM.match(cur.line, cur.pos)) is not None:
            cur.pos = m.end()
            sub = m.group().decode("ascii", "replace").upper()
        if sub not in _UID_COMMANDS:
            return tag, None, ParseError(tag, "Unknown UID command"), True
        return tag, f"UID {sub}", _PARSERS[sub], True
    parser = _PARSERS.get(name)
    if parser is None:
        return tag, None, ParseError(tag, "Unknown command"), False
    return tag, name, parser, False


#: What head() found in a command's first segment, and where it stopped: (tag, name, parser,
#: uid, position). The reader keeps it from a literal's line so parse_command need not redo it.
Head = tuple[str, str, Parser, bool, int]


def parse_command(
    segs: list[bytes],
    lits: list[tuple[LiteralData, bool]] | None = None,
    utf8_names: bool = False,
    known_head: Head | None = None,
) -> Event:
    """Parse one complete command (CRLFs and literal markers removed; see Cursor).
    utf8_names: mailbox names are UTF-8 rather than modified UTF-7 (IMAP4rev2).
    known_head: head() of segs[0] when the caller already ran it."""
    cur = Cursor(segs, lits, utf8_names)
    if known_head is not None:
        tag, name, parser, uid, cur.pos = known_head
    else:
        tag, name, parser, uid = head(cur)
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
