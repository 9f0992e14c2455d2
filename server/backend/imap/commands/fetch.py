"""FETCH and UID FETCH (RFC 3501 6.4.5), with CHANGEDSINCE / VANISHED (RFC 7162).

Each requested item becomes one small function of (index, row, message) giving its bytes,
chosen once per command, so the per-message loop does no item parsing. Message bytes and
parsed metadata are loaded only when an item needs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import BinaryIO

from server.backend.imap.commands import SELECTED, command
from server.backend.imap.session import Bad, ImapSession, No, encode_flags, tagged
from server.backend.service import retrieval_view
from server.mail import mime
from server.protocols.imap import binary, bodystructure
from server.protocols.imap import requests as rq
from server.protocols.imap.seqset import format_seqset
from server.retrieval import Rendered, RetrievalView
from server.store import api

_MONTHS = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)


def internaldate(value: datetime) -> bytes:
    """date-time = "dd-Mon-yyyy hh:mm:ss +zzzz" (day padded with a space)."""
    off = value.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%2d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        value.day,
        _MONTHS[value.month - 1],
        value.year,
        value.hour,
        value.minute,
        value.second,
        sign,
        minutes // 60,
        minutes % 60,
    )


class Message:
    """Lazy per-message access to the bytes a client retrieves and their parsed metadata:
    the stored message and its cached MessageInfo, or, when MessageRetrievalMimeFormat or
    the calendar option change the message, the rendering (server.retrieval) and its own
    analysis, so sizes, ENVELOPE, BODYSTRUCTURE and sections all describe the bytes sent.

    `source` is what the store's message_sources() gave for the message (file path,
    header block), looked up for the whole command at once; without it each access asks
    the store."""

    __slots__ = (
        "s",
        "uid",
        "view",
        "source",
        "as_stored",
        "_stored",
        "_raw",
        "_info",
        "_rendered",
    )

    def __init__(
        self,
        s: ImapSession,
        uid: int,
        view: RetrievalView | None = None,
        source: api.MessageSource | None = None,
        as_stored: bool | None = None,
    ) -> None:
        self.s = s
        self.uid = uid
        self.view = view
        self.source = source
        # The message goes out as stored (`view`'s as_stored, given by a caller that
        # builds many Messages with one view).
        self.as_stored = (view is None or view.as_stored) if as_stored is None else as_stored
        self._stored: bytes | None = None
        self._raw: bytes | None = None
        self._info: bodystructure.MessageInfo | None = None
        self._rendered: Rendered | None = None

    def stored(self) -> bytes:
        if self._stored is None:
            source = self.source
            if source is None:
                # Looked up with the folder's UIDVALIDITY, so a folder of the same name
                # created since (its notification not in yet) can't lend its messages.
                s = self.s
                source = s.store.message_sources(
                    s.sel.name, [self.uid], uidvalidity=s.sel.uidvalidity
                ).get(self.uid)
                if source is None:
                    raise api.StoreError(f"Message UID {self.uid} no longer exists.")
            if source.path is not None:
                self._stored = api.read_body(source.path, self.uid)
            else:
                s = self.s
                self._stored = s.store.read(s.sel.name, self.uid)
        return self._stored

    def _render(self) -> Rendered | None:
        """The rendering, or None for stored messages (SEARCH, and the fast path)."""
        view = self.view
        if self._rendered is None and view is not None and not view.as_stored:
            self._rendered = view.rendered(self.uid, self.stored)
        return self._rendered

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            rendered = self._render()
            self._raw = rendered.data if rendered and rendered.data is not None else self.stored()
        return self._raw

    @property
    def info(self) -> bodystructure.MessageInfo:
        if self._info is None:
            rendered = self._render()
            if rendered is not None and rendered.data is not None and self.view is not None:
                self._info = self.view.info(rendered)
            else:
                self._info = self.s.info(self.uid)
        return self._info

    def header(self) -> bytes:
        """The top-level header block (with its blank line) of the bytes sent: the
        store's copy when the message goes out as stored, no message file read."""
        return self.stored_header() or self.raw[: self.info.header_len]

    def stored_header(self) -> bytes | None:
        """The store's header block when it is the one sent (as stored, or a rendering
        that keeps the header as stored), else None."""
        source = self.source
        if (
            source is not None
            and source.header is not None
            and (self.as_stored or _crlf_only(source.header))
        ):
            return source.header
        return None

    def size(self, row: api.MessageRow) -> int:
        if self.view is None:
            return row.size
        return self.view.size(self.uid, row.size, self.stored)

    def open_for_streaming(self) -> tuple[BinaryIO, int] | None:
        """The message file, open, and its size, when the message goes out as stored and
        is big enough to be sent in OUTPUT_CHUNK pieces rather than read whole."""
        view, source = self.view, self.source
        if (
            (view is not None and not view.as_stored)
            or source is None
            or source.path is None
            or self._stored is not None
        ):
            return None
        try:
            fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise api.StoreError(f"Message UID {self.uid} no longer exists.") from None
        try:
            size = os.fstat(fd).st_size
            if size > OUTPUT_CHUNK:
                return open(fd, "rb", buffering=0), size  # noqa: SIM115 - closed by _stream
            # A small message goes out whole: read it now, from the file already open.
            self._stored = api.read_fd(fd, size)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None


def _crlf_only(block: bytes) -> bool:
    """No bare LF: a rendering writes the kept fields with CRLF line ends."""
    return block.count(b"\n") == block.count(b"\r\n")


Item = Callable[[int, api.MessageRow, Message], bytes]


class FieldCache:
    """HEADER.FIELDS answers of stored messages, by (message file, fields), shared by the
    sessions of a process: a client opening a folder asks for the same From/Subject/Date
    of every message at each session, and filtering 200 header blocks costs more than the
    rest of such a FETCH. A message file never changes and its name is never given to
    another message, so a kept answer stays right; whether the message still exists is
    decided per FETCH by the store's lookup (message_sources), as without the cache.
    Thread-safe as InfoCache is: single dict operations under the GIL."""

    def __init__(self, limit: int = 20000) -> None:
        self.limit = limit
        self._data: dict[tuple[object, ...], bytes] = {}

    def get(self, key: tuple[object, ...]) -> bytes | None:
        return self._data.get(key)

    def put(self, key: tuple[object, ...], value: bytes) -> bytes:
        data = self._data
        if len(data) >= self.limit:
            # Drop the oldest quarter (dicts keep insertion order): no per-hit bookkeeping.
            for k in list(data)[: self.limit // 4]:
                data.pop(k, None)
        data[key] = value
        return value

    def clear(self) -> None:
        self._data.clear()


FIELDS = FieldCache()

#: FETCH output handed to the I/O layer at a time (see _emit).
OUTPUT_CHUNK = 1024 * 1024

#: Messages whose sources (file paths, header blocks) are looked up in one store call.
BATCH = 1000

_HEADER_ONLY = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


class _Streamed(bytes):
    """An item's text up to its literal's octets ("BODY[] {n}\r\n"); the n octets follow
    from `file` in OUTPUT_CHUNK pieces (see _emit and _stream)."""

    file: BinaryIO
    size: int


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _section_bytes(msg: Message, section: rq.Section) -> bytes:
    if not section.part and not section.specifier:
        return msg.raw
    if not section.part and section.specifier == "HEADER":
        return msg.header()
    return mime.fetch_section(
        msg.raw, msg.info, section.part, section.specifier or None, list(section.fields)
    )


def _header_only(item: rq.FetchItem) -> bool:
    """BODY[HEADER], BODY[HEADER.FIELDS (...)], BODY[HEADER.FIELDS.NOT (...)] and
    RFC822.HEADER: answered from the header block alone."""
    section = item.section
    return (
        section is not None
        and not section.part
        and section.specifier in _HEADER_ONLY
        and not item.name.startswith("BINARY")
    )


def _body_item(item: rq.FetchItem) -> Item:
    assert item.section is not None
    section = item.section
    prefix = item.response_name.encode("ascii", "replace") + b" "
    partial = item.partial
    whole = not section.part and not section.specifier and partial is None

    if whole:

        def get(i: int, row: api.MessageRow, msg: Message) -> bytes:
            opened = msg.open_for_streaming()
            if opened is not None:
                head = _Streamed(prefix + b"{%d}\r\n" % opened[1])
                head.file, head.size = opened
                return head
            raw = msg.raw
            return prefix + b"{%d}\r\n" % len(raw) + raw

        get.streams = True  # type: ignore[attr-defined]
        return get

    if _header_only(item):
        spec = section.specifier
        pick = (
            None
            if spec == "HEADER"
            else mime.header_filter(section.fields, exclude=spec == "HEADER.FIELDS.NOT")
        )
        fields = (spec == "HEADER.FIELDS.NOT", *section.fields)

        def get_header(i: int, row: api.MessageRow, msg: Message) -> bytes:
            if pick is None:
                data = msg.header()
            else:
                stored = msg.stored_header()
                source = msg.source
                if stored is None or source is None or source.path is None:
                    data = pick(msg.header())
                else:
                    key = (source.path, fields)
                    data = FIELDS.get(key)
                    if data is None:
                        data = FIELDS.put(key, pick(stored))
            if partial is not None:
                origin, count = partial
                data = data[origin : origin + count]
            return prefix + b"{%d}\r\n" % len(data) + data

        return get_header

    def get_section(i: int, row: api.MessageRow, msg: Message) -> bytes:
        data = _section_bytes(msg, section)
        if partial is not None:
            origin, count = partial
            data = data[origin : origin + count]
        return prefix + _literal(data)

    return get_section


def _flags_item(s: ImapSession) -> Item:
    """FLAGS, its text cached per distinct (flags, \\Recent) for the command: a folder has
    few distinct flag sets."""
    sel = s.sel
    known: dict[tuple[frozenset[str], bool], bytes] = {}

    def flags(i: int, row: api.MessageRow, msg: Message) -> bytes:
        key = (row.flags, row.uid in sel.recent)
        got = known.get(key)
        if got is None:
            got = known[key] = b"FLAGS " + encode_flags(*key)
        return got

    return flags


def _simple(name: str, s: ImapSession, view: RetrievalView | None = None) -> Item:
    if name == "UID":
        return lambda i, row, msg: b"UID %d" % row.uid
    if name == "FLAGS":
        return _flags_item(s)
    if name == "RFC822.SIZE":
        # As stored, the store keeps the exact octet count. A rendered message's size is
        # estimated unless EnableExactRFC822Size is $true (RetrievalView.size).
        if view is not None and view.as_stored:
            return lambda i, row, msg: b"RFC822.SIZE %d" % row.size
        return lambda i, row, msg: b"RFC822.SIZE %d" % msg.size(row)
    if name == "INTERNALDATE":
        return lambda i, row, msg: b"INTERNALDATE " + internaldate(row.internaldate)
    if name == "MODSEQ":
        return lambda i, row, msg: b"MODSEQ (%d)" % row.modseq
    if name == "ENVELOPE":
        return lambda i, row, msg: b"ENVELOPE " + msg.info.envelope
    if name == "BODYSTRUCTURE":
        return lambda i, row, msg: b"BODYSTRUCTURE " + msg.info.bodystructure
    if name == "BODY":
        return lambda i, row, msg: b"BODY " + msg.info.body
    raise Bad(f"{name} is not supported")


def _binary_data(msg: Message, section: rq.Section) -> bytes:
    data = binary.decode_part(msg.raw, msg.info.part_map, section.part) if section.part else msg.raw
    if data is None:
        raise No(f"Unknown Content-Transfer-Encoding in part {section}", "UNKNOWN-CTE")
    return data


def _binary_item(item: rq.FetchItem) -> Item:
    """BINARY[section]<partial> and BINARY.SIZE[section] (RFC 3516 section 4.2)."""
    assert item.section is not None
    section = item.section
    prefix = item.response_name.encode("ascii", "replace") + b" "
    partial = item.partial
    if item.name == "BINARY.SIZE":

        def size(i: int, row: api.MessageRow, msg: Message) -> bytes:
            if not section.part:
                return prefix + b"%d" % len(msg.raw)
            return prefix + b"%d" % len(_binary_data(msg, section))

        return size

    def get(i: int, row: api.MessageRow, msg: Message) -> bytes:
        data = _binary_data(msg, section)
        if partial is not None:
            origin, count = partial
            data = data[origin : origin + count]
        return prefix + binary.literal(data)

    return get


def build_items(
    s: ImapSession, items: tuple[rq.FetchItem, ...], view: RetrievalView | None = None
) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if item.name.startswith("BINARY"):
            out.append(_binary_item(item))
        elif item.section is not None:
            out.append(_body_item(item))
        else:
            out.append(_simple(item.name, s, view))
    return out


def _kept_by_rendering(section: rq.Section) -> bool:
    """HEADER.FIELDS naming no field a retrieval rendering rewrites: renderings keep the
    stored top-level fields but Content-* and MIME-Version (server.retrieval.mimeutil
    kept_fields), in their order, so the stored header block gives the same answer."""
    return section.specifier == "HEADER.FIELDS" and not any(
        name.startswith("CONTENT-") or name == "MIME-VERSION" for name in section.fields
    )


class _Needs:
    """What the items of one FETCH need from the store, decided once per command."""

    __slots__ = ("sources", "header", "info")

    def __init__(self, items: list[rq.FetchItem], view: RetrievalView) -> None:
        stored = view.as_stored
        header = info = body = False
        kept = True  # every header item names only fields a rendering keeps as stored
        for item in items:
            if item.section is None:
                info = info or item.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY")
            elif _header_only(item):
                header = True
                kept = kept and _kept_by_rendering(item.section)
            else:
                body = True
                info = info or bool(item.section.part or item.section.specifier)
        # A rendered message (retrieval formats) is read and analyzed per message: its
        # header block and structure are those of the rendering, not the stored ones,
        # except the fields a rendering never touches (a client opening a folder asks for
        # From/Subject/Date: answered from the store's header blocks, nothing rendered).
        self.header = header and (stored or kept)
        self.info = info and stored
        self.sources = self.header or body or (info and not stored)


#: Folders up to this size may have a read-only FETCH run in place (see reads_only).
INLINE_MAX_MESSAGES = 5000


def reads_only(s: ImapSession, cmd: rq.Command) -> bool:
    """A FETCH that writes nothing: no \\Seen to set (PEEK, or a read-only folder) and no
    pending changes to take in first (taking new messages claims their \\Recent, a
    write). Bounded by the folder's size, so running it in place stalls nobody long."""
    args: rq.Fetch = cmd.args  # type: ignore[assignment]
    sel = s.selected
    if s.dirty or sel is None or sel.exists > INLINE_MAX_MESSAGES:
        return False
    return sel.readonly or not any(item.sets_seen for item in args.items)


@command(rq.Fetch, states=SELECTED, inline=reads_only)
def fetch(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Fetch = cmd.args  # type: ignore[assignment]
    sel = s.sel
    items = list(args.items)
    names = {i.name for i in items}
    if args.changedsince is not None or "MODSEQ" in names:
        s.enable_condstore()
    if args.vanished and not s.qresync:
        raise Bad("VANISHED needs QRESYNC enabled")
    if s.dirty:
        s.sync(allow_expunge=False)
    if args.uid and "UID" not in names:
        items.insert(0, rq.FetchItem("UID", response_name="UID"))
    elif s.qresync and "UID" not in names:
        items.append(rq.FetchItem("UID", response_name="UID"))
    if args.changedsince is not None and "MODSEQ" not in names:
        items.append(rq.FetchItem("MODSEQ", response_name="MODSEQ"))
    idx = s.resolve(args.seqset, args.uid)
    if args.vanished and args.changedsince is not None:
        _report_vanished(s, args)
    if args.changedsince is not None:
        since = args.changedsince
        idx = [i for i in idx if sel.rows[i].modseq > since]
    view = _view(s)
    getters = build_items(s, tuple(items), view)
    receipts = view.sends_receipts and not sel.readonly and any(map(_downloads, items))
    _check_binary(s, items, idx, view)
    flag_after = _mark_seen(s, items, idx)
    return _emit(s, cmd, idx, 0, getters, flag_after, False, view, receipts, _Needs(items, view))


def _check_binary(
    s: ImapSession, items: list[rq.FetchItem], idx: list[int], view: RetrievalView
) -> None:
    """A BINARY[part] that sets \\Seen is refused with [UNKNOWN-CTE] before any flag
    changes, not halfway through (RFC 3516 section 4.2: the request fails)."""
    parts = [
        i.section.part
        for i in items
        if i.name == "BINARY" and i.sets_seen and i.section is not None and i.section.part
    ]
    if not parts or s.sel.readonly:
        return
    rows = s.sel.rows
    for i in idx:
        try:
            root = Message(s, rows[i].uid, view).info.part_map
        except api.StoreError:
            continue
        for part in parts:
            found = mime.find_part(root, part)
            if (
                found is not None
                and found.kind == mime.LEAF
                and found.cte.lower() not in binary.DECODABLE
            ):
                raise No(
                    f"Unknown Content-Transfer-Encoding in part {'.'.join(map(str, part))}",
                    "UNKNOWN-CTE",
                )


def _view(s: ImapSession) -> RetrievalView:
    """The retrieval options of this command, from the live settings (a changed format
    applies from the next FETCH). Kept while the settings object and the folder stay the
    same: a reload brings a new Settings object, and working the options out again costs
    a search of the mailbox list at every FETCH."""
    assert s.login is not None
    sel = s.sel
    settings = s.config.settings()
    cached = s.retrieval
    if (
        cached is not None
        and cached[0] is settings
        and cached[1] == sel.name
        and cached[2] == sel.uidvalidity
    ):
        return cached[3]  # type: ignore[return-value]
    view = retrieval_view(
        settings,
        s.config.server,
        "IMAP4",
        s.login.name,
        sel.name,
        sel.uidvalidity,
        s.config.receipts,
    )
    s.retrieval = (settings, sel.name, sel.uidvalidity, view)
    return view


def _downloads(item: rq.FetchItem) -> bool:
    """A non-PEEK fetch of the whole message or its text: a download, which earns the
    sender a read receipt (SuppressReadReceipt $false)."""
    section = item.section
    return (
        item.sets_seen
        and section is not None
        and not section.part
        and section.specifier in ("", None, "TEXT")
    )


def _emit(
    s: ImapSession,
    cmd: rq.Command,
    idx: list[int],
    start: int,
    getters: list[Item],
    flag_after: set[int],
    expunged: bool,
    view: RetrievalView,
    receipts: bool,
    needs: _Needs,
) -> bytes | None:
    """Write FETCH responses from idx[start:]; past OUTPUT_CHUNK bytes, hand the rest to
    the session as a follow-up job, so the I/O layer sends (and the client drains) one
    chunk at a time instead of the whole mailbox sitting in memory. What the items need
    from the store is looked up for BATCH messages at a time, not per message."""
    sel = s.sel
    rows = sel.rows
    pending = sel.pending_vanished
    out = s.out
    flags_item = _simple("FLAGS", s)
    # Only a whole-body item sends a message from its file (_Streamed).
    may_stream = any(getattr(g, "streams", False) for g in getters)
    as_stored = view.as_stored
    size = 0
    sources: dict[int, api.MessageSource] | None = None
    batch_end = start
    for k in range(start, len(idx)):
        if k == batch_end:
            batch_end = min(k + BATCH, len(idx))
            sources = _prefetch(s, needs, [rows[j].uid for j in idx[k:batch_end]])
        i = idx[k]
        row = rows[i]
        uid = row.uid
        if uid in pending:
            expunged = True
            continue
        source = None
        if sources is not None:
            source = sources.get(uid)
            if source is None:  # expunged by another session since our snapshot
                expunged = True
                continue
        msg = Message(s, uid, view, source, as_stored)
        try:
            parts = [g(i, row, msg) for g in getters]
            if receipts and view.receipts is not None:
                view.receipts.downloaded(
                    s.store, sel.name, uid, row.flags, view.mailbox, msg.stored()
                )
        except api.StoreError:
            expunged = True
            continue
        if flag_after and uid in flag_after:
            parts.append(flags_item(i, row, msg))
        streamed = (
            [n for n, part in enumerate(parts) if type(part) is _Streamed] if may_stream else None
        )
        if streamed:
            # A big message as stored: its octets go out from the file one chunk per job,
            # so neither this session nor the I/O layer ever holds the whole message.
            at = streamed[0]
            head: _Streamed = parts[at]  # type: ignore[assignment]
            for other in streamed[1:]:  # the same message twice in one FETCH: rare, read
                extra: _Streamed = parts[other]  # type: ignore[assignment]
                parts[other] = bytes(extra) + _read_all(extra.file, extra.size)
            out.append(b"* %d FETCH (" % (i + 1) + b" ".join(parts[: at + 1]))
            tail = b"".join(b" " + part for part in parts[at + 1 :]) + b")\r\n"
            rest = partial(
                _emit,
                idx=idx,
                start=k + 1,
                getters=getters,
                flag_after=flag_after,
                expunged=expunged,
                view=view,
                receipts=receipts,
                needs=needs,
            )
            s.resume_with(
                partial(_stream, file=head.file, left=head.size, tail=tail, then=rest), cmd
            )
            return b""
        line = b"* %d FETCH (" % (i + 1) + b" ".join(parts) + b")\r\n"
        out.append(line)
        size += len(line)
        if size >= OUTPUT_CHUNK and k + 1 < len(idx):
            s.resume_with(
                partial(
                    _emit,
                    idx=idx,
                    start=k + 1,
                    getters=getters,
                    flag_after=flag_after,
                    expunged=expunged,
                    view=view,
                    receipts=receipts,
                    needs=needs,
                ),
                cmd,
            )
            return b""
    if expunged:
        return tagged(cmd.tag, b"OK", "Some messages were expunged", "EXPUNGEISSUED")
    return None


def _read_all(file: BinaryIO, size: int) -> bytes:
    try:
        data = file.read(size) or b""
        while len(data) < size and (more := file.read(size - len(data))):
            data += more
    finally:
        file.close()
    return data.ljust(size, b" ")  # a file cut short must not break the literal's framing


def _stream(
    s: ImapSession,
    cmd: rq.Command,
    *,
    file: BinaryIO,
    left: int,
    tail: bytes,
    then: Callable[[ImapSession, rq.Command], bytes | None],
) -> bytes | None:
    """One OUTPUT_CHUNK of a streamed literal; after the last one, the rest of the FETCH
    response line and the next messages (`then`)."""
    want = min(OUTPUT_CHUNK, left)
    try:
        data = file.read(want) or b""
        while len(data) < want and (more := file.read(want - len(data))):
            data += more
    except OSError:
        data = b""
    if len(data) < want:  # message files never change; padding keeps the framing if one did
        data = data.ljust(want, b" ")
    left -= want
    if left:
        s.out.append(data)
        s.resume_with(partial(_stream, file=file, left=left, tail=tail, then=then), cmd)
        return b""
    file.close()
    s.out.append(data)
    s.out.append(tail)
    return then(s, cmd)


def _prefetch(
    s: ImapSession, needs: _Needs, uids: list[int]
) -> dict[int, api.MessageSource] | None:
    """One store lookup for a batch: file paths and header blocks (None when the items
    need neither); the MessageInfos not cached yet go into the session's cache."""
    if needs.info:
        s.prefetch_infos(uids)
    if not needs.sources:
        return None
    return s.store.message_sources(
        s.sel.name, uids, header=needs.header, uidvalidity=s.sel.uidvalidity
    )


def _mark_seen(s: ImapSession, items: list[rq.FetchItem], idx: list[int]) -> set[int]:
    """Set \\Seen for a non-PEEK body fetch (RFC 3501 6.4.5); returns the UIDs whose
    FLAGS must be reported because the client did not ask for them."""
    sel = s.sel
    if sel.readonly or not any(i.sets_seen for i in items):
        return set()
    uids = [
        sel.rows[i].uid
        for i in idx
        if "\\Seen" not in sel.rows[i].flags and sel.rows[i].uid not in sel.pending_vanished
    ]
    if not uids:
        return set()
    result = s.store.set_flags(sel.name, uids, "+", ["\\Seen"])
    changed = set()
    for row in result.changed:
        j = sel.index_of(row.uid)
        if j >= 0:
            sel.rows[j] = row
            changed.add(row.uid)
    if any(i.name == "FLAGS" for i in items):
        return set()
    return changed


def _report_vanished(s: ImapSession, args: rq.Fetch) -> None:
    sel = s.sel
    top = max(sel.uidnext - 1, sel.uids[-1] if sel.uids else 0)
    wanted = args.seqset.resolve(top)
    assert args.changedsince is not None
    gone = [u for u in s.store.changes_since(sel.name, args.changedsince).vanished if u in wanted]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + format_seqset(gone).encode())
