"""URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524): GENURLAUTH, RESETKEY, URLFETCH; and
the URL resolution CATENATE shares (RFC 4469).

Each mailbox (folder) has an access key, made on first GENURLAUTH and kept in the
mailbox database with the folder's UIDVALIDITY (a folder deleted and made again has a new
key). The INTERNAL mechanism's verifier is HMAC-SHA256 of the URL rump under that key
(imapurl.verifier). RESETKEY replaces keys, which voids every URL made with them.

A URL naming another user's mailbox is read from that mailbox when this back end holds it
(SessionConfig.open_mailbox); otherwise URLFETCH answers NIL for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from server.backend.imap.commands import AUTH, command
from server.backend.imap.session import ImapSession, No
from server.mail import mime
from server.protocols.imap import binary, bodystructure
from server.protocols.imap import requests as rq
from server.protocols.imap.imapurl import (
    INTERNAL,
    ImapUrl,
    UrlError,
    authorized,
    badurl,
    parse,
    same_user,
    verifier,
    verify,
)
from server.protocols.imap.wire import encode, encode_string
from server.store import api


def _owner_store(s: ImapSession, url: ImapUrl) -> api.MailboxStore | None:
    """The mailbox the URL's user owns: ours, or another this back end holds."""
    assert s.login is not None
    if url.user is None or same_user(url.user, s.login.name):
        return s.store
    opener = s.config.open_mailbox
    if opener is None:
        return None
    for name in (f"{url.user}@{url.host}", url.user):
        try:
            found = opener(name)
        except api.StoreError:
            found = None
        if found is not None:
            if found.name == s.store.name:
                return s.store
            return found
    return None


class _Target:
    """The message a URL names, read from its store."""

    def __init__(self, raw: bytes, info: bodystructure.MessageInfo) -> None:
        self.raw = raw
        self.info = info

    def section(self, url: ImapUrl) -> bytes | None:
        """BODY[section]<partial> of the URL (None: a part that does not exist)."""
        section = url.section
        if section is None:
            data = self.raw
        else:
            if section.part and mime.find_part(self.info.part_map, section.part) is None:
                return None
            data = mime.fetch_section(
                self.raw, self.info, section.part, section.specifier or None, list(section.fields)
            )
        return _partial(data, url.partial)

    def binary(self, url: ImapUrl) -> bytes | None:
        section = url.section
        if section is not None and section.specifier:
            return None
        data = binary.decode_part(self.raw, self.info.part_map, section.part if section else ())
        return None if data is None else _partial(data, url.partial)

    def bodypartstructure(self, url: ImapUrl, decoded: bytes | None = None) -> bytes | None:
        section = url.section
        if section is not None and section.specifier:
            return None
        return part_structure(self.raw, section.part if section else (), decoded)


def _partial(data: bytes, partial: tuple[int, int | None] | None) -> bytes:
    if partial is None:
        return data
    origin, length = partial
    return data[origin:] if length is None else data[origin : origin + length]


def _domain(data: bytes) -> bytes:
    """The data domain of decoded octets (RFC 2045 section 2.7-2.9)."""
    if b"\x00" in data or any(len(line) > 998 for line in data.split(b"\n")):
        return b"binary"
    return b"7bit" if data.isascii() else b"8bit"


def part_structure(
    raw: bytes, section: tuple[int, ...], decoded: bytes | None = None
) -> bytes | None:
    """BODYSTRUCTURE of one part (RFC 5524 BODYPARTSTRUCTURE), wire form. With
    `decoded` (BINARY asked for too) a leaf part is described as the data sent: its
    data domain as encoding and the decoded size; its line count is not known for the
    decoded form and given as 0 (as Dovecot does)."""
    root = mime.parse(raw)
    node = root
    for i, num in enumerate(section):
        if node.part.kind == mime.MULTIPART:
            if not 0 < num <= len(node.nodes):
                return None
            node = node.nodes[num - 1]
        elif num != 1 or (i + 1 < len(section) and node.part.kind != mime.MESSAGE):
            return None
        if node.part.kind == mime.MESSAGE and i + 1 < len(section):
            node = node.nodes[0]
    structure = bodystructure.structure_value(node, raw, True, root=node is root)
    if decoded is not None and node.part.kind == mime.LEAF:
        structure[5] = _domain(decoded)
        structure[6] = len(decoded)
        if isinstance(structure[7], int):  # text parts: body-fld-lines
            structure[7] = 0
    return encode(structure)


def _target(store: api.MailboxStore, url: ImapUrl) -> _Target | None:
    try:
        status = store.status(url.mailbox)
        if url.uidvalidity is not None and url.uidvalidity != status.uidvalidity:
            return None
        raw = store.read(url.mailbox, url.uid)
        info = store.info(url.mailbox, url.uid)
    except api.StoreError:
        return None
    return _Target(raw, info)  # type: ignore[arg-type]


def _authorized_store(s: ImapSession, url: ImapUrl) -> api.MailboxStore | None:
    """The store an URLAUTH-authorized URL may be read from, or None (RFC 4467 section
    6.3: wrong access, expired, unknown key or a verifier that does not match)."""
    assert s.login is not None
    if url.access is None or url.token is None or not url.absolute:
        return None
    if url.expire is not None and url.expire <= datetime.now(UTC):
        return None
    if not authorized(url, s.login.name):
        return None
    store = _owner_store(s, url)
    if store is None:
        return None
    try:
        key = store.urlauth_key(url.mailbox, create=False)
    except api.StoreError:
        return None
    if key is None or not verify(key, url):
        return None
    return store


class FileRange:
    """Octets start:end of a message file: a CATENATE URL part copied from the file a
    piece at a time instead of read whole (a forwarded 20 MB attachment stays on disk)."""

    __slots__ = ("path", "start", "end")

    def __init__(self, path: str, start: int, end: int) -> None:
        self.path, self.start, self.end = path, start, end

    @property
    def size(self) -> int:
        return self.end - self.start

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Raises FileNotFoundError when the message was expunged meanwhile."""
        with open(self.path, "rb") as fh:
            fh.seek(self.start)
            left = self.size
            while left > 0:
                piece = fh.read(min(size, left))
                if not piece:
                    raise FileNotFoundError(self.path)  # shorter than its part map says
                left -= len(piece)
                yield piece


def section_range(
    info: bodystructure.MessageInfo, section: rq.Section | None
) -> tuple[int, int] | None:
    """The octets of BODY[section] when they are one stretch of the message (what
    mime.fetch_section would cut out); None for HEADER.FIELDS[.NOT], which filters.
    Raises LookupError for a part that does not exist."""
    if section is None:
        return 0, info.size
    part = mime.find_part(info.part_map, section.part) if section.part else info.part_map
    if part is None:
        raise LookupError(str(section))
    spec = section.specifier
    if spec == "":
        return (part.body, part.end) if section.part else (part.start, part.end)
    if spec == "MIME":
        return part.start, part.body
    if section.part:
        if part.kind != mime.MESSAGE:
            return 0, 0
        part = part.children[0]
    if spec == "TEXT":
        return part.body, part.end
    if spec == "HEADER":
        return part.start, part.body
    return None


def resolve_url(s: ImapSession, text: str) -> bytes | FileRange | None:
    """What a CATENATE URL part names (RFC 4469 section 3): a stretch of a message file,
    or the bytes; None when it names nothing this user may read. A relative ";UID=..."
    names a message of the selected mailbox."""
    url = parse(text, s.selected.name if s.selected is not None else None)
    if url.token is not None:
        store = _authorized_store(s, url)
    elif url.access is not None:
        return None  # a rump: not usable until GENURLAUTH signs it
    elif url.user is not None and not same_user(url.user, s.login.name if s.login else ""):
        return None
    else:
        store = s.store
    if store is None:
        return None
    found = _file_range(store, url)
    if found is not None:
        return found
    target = _target(store, url)
    return target.section(url) if target is not None else None


def _file_range(store: api.MailboxStore, url: ImapUrl) -> FileRange | None:
    """The URL's octets as a FileRange, when the store keeps message files and the
    section is one stretch; None to read the message instead (also when it is gone)."""
    try:
        status = store.status(url.mailbox)
        if url.uidvalidity is not None and url.uidvalidity != status.uidvalidity:
            return None
        path = store.body_paths(url.mailbox, [url.uid]).get(url.uid)
        if path is None:
            return None
        info: bodystructure.MessageInfo = store.info(url.mailbox, url.uid)  # type: ignore[assignment]
        stretch = section_range(info, url.section)
    except (api.StoreError, LookupError):
        return None
    if stretch is None:
        return None
    start, end = stretch
    if url.partial is not None:
        origin, length = url.partial
        start = min(start + origin, end)
        if length is not None:
            end = min(start + length, end)
    return FileRange(str(path), start, end)


@command(rq.GenUrlAuth, states=AUTH)
def genurlauth(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.GenUrlAuth = cmd.args  # type: ignore[assignment]
    assert s.login is not None
    out = []
    for rump, mechanism in args.requests:
        if mechanism != INTERNAL:
            raise No(f"Unknown URLAUTH mechanism {mechanism}")
        try:
            url = parse(rump)
        except UrlError as exc:
            raise No(str(exc), f"BADURL {badurl(rump)}") from None
        if not url.absolute or url.access is None or url.token is not None:
            raise No("Not a URLAUTH rump", f"BADURL {badurl(rump)}")
        if url.user is None or not same_user(url.user, s.login.name):
            raise No("The URL names another user's mailbox", f"BADURL {badurl(rump)}")
        try:
            key = s.store.urlauth_key(url.mailbox, create=True)
        except api.StoreError:
            raise No("Mailbox doesn't exist", f"BADURL {badurl(rump)}") from None
        assert key is not None
        out.append(encode_string(f"{rump}:{INTERNAL}:{verifier(key, rump)}"))
    s.untagged(b"GENURLAUTH " + b" ".join(out))
    return None


@command(rq.ResetKey, states=AUTH)
def resetkey(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.ResetKey = cmd.args  # type: ignore[assignment]
    for mechanism in args.mechanisms:
        if mechanism != INTERNAL:
            raise No(f"Unknown URLAUTH mechanism {mechanism}")
    try:
        s.store.reset_urlauth_keys(args.mailbox)
    except api.NoSuchFolder:
        raise No("Mailbox doesn't exist", "NONEXISTENT") from None
    return None


@command(rq.UrlFetch, states=AUTH)
def urlfetch(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.UrlFetch = cmd.args  # type: ignore[assignment]
    out = [b"URLFETCH"]
    for text, params in args.urls:
        out.append(encode_string(text))
        data = _fetch_one(s, text, params)
        if data:  # nothing for "(url)" without parameters: no metadata asked for
            out.append(data)
    s.untagged(b" ".join(out))
    return None


def _fetch_one(s: ImapSession, text: str, params: tuple[str, ...] | None) -> bytes:
    try:
        url = parse(text)
    except UrlError:
        return b"NIL"
    store = _authorized_store(s, url)
    target = _target(store, url) if store is not None else None
    if target is None:
        return b"NIL"
    if params is None:
        data = target.section(url)
        return b"NIL" if data is None else _literal(data)
    items = []
    decoded = target.binary(url) if "BINARY" in params else None
    if "BODYPARTSTRUCTURE" in params:
        # RFC 5524 section 5: with BINARY the structure describes the decoded data.
        structure = target.bodypartstructure(url, decoded)
        items.append(b"(BODYPARTSTRUCTURE " + (structure or b"NIL") + b")")
    if "BINARY" in params:
        data = decoded
        items.append(b"(BINARY " + (b"NIL" if data is None else binary.literal(data)) + b")")
    elif "BODY" in params:
        data = target.section(url)
        items.append(b"(BODY " + (b"NIL" if data is None else _literal(data)) + b")")
    return b" ".join(items)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data
