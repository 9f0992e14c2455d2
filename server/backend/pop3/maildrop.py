"""The POP3 maildrop of one session: the mailbox's INBOX, locked for the whole session
(RFC 1939 section 8), its message listing as STAT/LIST/UIDL report it, where RETR and TOP
take each message's bytes from (the body file, streamed when big and sent as stored, or
rendered through the session's RetrievalView), and UPDATE's deletes.

Everything here runs in the caller's thread and does blocking file and store I/O: the
connection (server/backend/pop3/connection.py) calls it from a worker thread, or inline for
small messages.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from server.backend import service as common
from server.protocols.pop3.session import Maildrop, build_maildrop
from server.retrieval import RetrievalView
from server.settings.models import Mailbox, PopSettings
from server.settings.types import SortOrder
from server.store.api import MailboxStore, StoreError

INBOX = "INBOX"
READ_SIZE = 64 * 1024  # a body file smaller than this is read with one read()
FILE_CHUNK = 1024 * 1024  # reads after the first READ_SIZE of a large body file
WRITE_SLICE = 1024 * 1024  # a big RETR is handed to the transport this much at a time
INLINE_READ_LIMIT = 256 * 1024  # smaller messages are read on the event loop (no thread hop)


def render_for_retrieval(raw: bytes, mailbox: Mailbox | None, pop: PopSettings) -> bytes:
    """The bytes RETR and TOP send for a stored message outside a session (sessions render
    through their RetrievalView): the back ends' shared rendering, with any bare LF made
    CRLF, because the byte-stuffing and the terminating "." line only work on CRLF lines.
    Messages stored with CRLF (what delivery and APPEND store) pass unchanged."""
    return crlf_lines(
        common.render_for_retrieval(raw, protocol="POP3", mailbox=mailbox, settings=pop)
    )


def crlf_lines(data: bytes) -> bytes:
    """`data` with every line ending in CRLF (the byte-stuffing needs CRLF lines)."""
    if data.count(b"\n") != data.count(b"\r\n"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data


_RECEIPT_FIELD = re.compile(rb"disposition-notification-to", re.IGNORECASE)
_DOT_LINE = re.compile(rb"\n\.")  # sre finds the "\n" with memchr: faster than `in` here


def header_end(raw: bytes) -> int:
    """Where the header block ends (its blank line), scanning no further than that line:
    a bare-LF blank line can only come before the first CRLF one."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n", 0, crlf if crlf >= 0 else len(raw))
    return lf if lf >= 0 else crlf if crlf >= 0 else len(raw)


def asks_for_receipt(raw: bytes) -> bool:
    """A cheap look at the header before the receipt machinery parses it: most messages ask
    for no receipt, and RETR of those should cost nothing more."""
    return _RECEIPT_FIELD.search(raw, 0, header_end(raw)) is not None


def wire_ready(data: bytes) -> bool:
    """True when `data` is already a POP3 multi-line body: CRLF lines only, none starting
    with "." (nothing to byte-stuff), ending in CRLF. Stored messages almost always are."""
    return (
        data.endswith(b"\r\n")
        and data[:1] != b"."
        and _DOT_LINE.search(data) is None
        and data.count(b"\n") == data.count(b"\r\n")
    )


# What RETR needs to know about a body file's bytes. Body files never change and their
# names are never reused (see MailboxStore.body_paths), so a file's facts hold for as long
# as the process runs: a maildrop downloaded again (leave-on-server clients, TOP then RETR)
# costs no scan.
WIRE_READY = 1
ASKS_RECEIPT = 2


def facts_of(data: bytes) -> int:
    return (WIRE_READY if wire_ready(data) else 0) | (ASKS_RECEIPT if asks_for_receipt(data) else 0)


class FileFacts:
    """facts_of() per body file path, bounded (forgotten all at once when full: a
    forgotten entry costs one scan)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._facts: dict[str, int] = {}
        self._limit = limit

    def of(self, path: str | None, data: bytes) -> int:
        if path is None:
            return facts_of(data)
        facts = self._facts.get(path)
        if facts is None:
            facts = facts_of(data)
            self._keep(path, facts)
        return facts

    def of_file(self, path: str, file: BinaryIO) -> int | None:
        """The facts of an open body file, scanned FILE_CHUNK at a time (never read whole);
        None when its header does not fit in the first chunk."""
        facts = self._facts.get(path)
        if facts is None:
            facts = scan_facts(file)
            if facts is None:
                return None
            self._keep(path, facts)
        return facts

    def _keep(self, path: str, facts: int) -> None:
        if len(self._facts) >= self._limit:
            self._facts.clear()
        self._facts[path] = facts


def scan_facts(file: BinaryIO) -> int | None:
    """facts_of() of a file's bytes, read in FILE_CHUNK pieces from its start. Each piece
    is searched with the last byte of the one before, so "\n." and CRLF across pieces
    count once."""
    first = file.read(FILE_CHUNK) or b""
    if header_end(first) >= len(first) and len(first) == FILE_CHUNK:
        return None  # a header bigger than a chunk: the caller reads the message whole
    asks = asks_for_receipt(first)
    ready = first[:1] != b"."
    lf = crlf = 0
    prev = tail = b""
    chunk = first
    while chunk:
        joined = prev + chunk
        if ready and _DOT_LINE.search(joined) is not None:
            ready = False
        lf += chunk.count(b"\n")
        crlf += joined.count(b"\r\n")
        prev, tail = chunk[-1:], (tail + chunk)[-2:]
        chunk = file.read(FILE_CHUNK) or b""
    ready = ready and tail == b"\r\n" and lf == crlf
    return (WIRE_READY if ready else 0) | (ASKS_RECEIPT if asks else 0)


class FileBody:
    """A RETR body sent as stored, straight from its open file, WRITE_SLICE at a time (see
    Pop3Connection._send_big in connection.py): a big message is never held whole. The
    session only takes its length (for "+OK n octets") and hands it back in a Send."""

    __slots__ = ("file", "size")

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size = file, size

    def __len__(self) -> int:
        return self.size


FILE_FACTS = FileFacts()


@dataclass(frozen=True)
class PopOptions:
    """The POP settings that apply to one mailbox (Set-CASMailbox overrides the server's
    when PopUseProtocolDefaults is false)."""

    exact_size: bool
    descending: bool

    @classmethod
    def of(cls, pop: PopSettings, box: Mailbox) -> PopOptions:
        own = not box.PopUseProtocolDefaults
        return cls(
            exact_size=box.PopEnableExactRFC822Size if own else pop.EnableExactRFC822Size,
            descending=pop.MessageRetrievalSortOrder is SortOrder.Descending,
        )


def message_sizes(
    box: MailboxStore, rows: list[tuple[int, int]], exact: bool, render: Callable[[bytes], bytes]
) -> list[tuple[int, int]]:
    """(uid, size) as STAT and LIST report them. Estimated sizes are the stored sizes from the
    snapshot (no message is read); with today's rendering they are exact for every message
    stored with CRLF line ends, which is how the store keeps them. The exact mode renders each
    message once to measure it, which matters once MessageRetrievalMimeFormat changes bytes."""
    if not exact:
        return rows
    return [(uid, len(render(box.read(INBOX, uid)))) for uid, _ in rows]


class MaildropFiles:
    """Where the maildrop's messages are stored, looked up once at login, so RETR and TOP
    open the file with no store lookup (a body file never changes; once removed, opening
    it fails). Any change to the mailbox by another session (a store notification) makes
    the next retrieval look the files up again, so a message expunged meanwhile is "no
    longer available" even when a copy in another folder keeps its file.

    Built without `uids`, it only subscribes: `load()` then takes the maildrop, with the
    files earlier sessions found (BodyPaths). Those are right for every message the store
    still had after the subscription (a message's bytes, hence its file, never change), so
    the caller takes its snapshot after subscribing and only loads UIDs from it."""

    def __init__(self, box: MailboxStore, uids: list[int] | None = None) -> None:
        self._box = box
        self._uids: list[int] = []
        self._paths: dict[int, str] = {}
        self._stale = False
        # Subscribed before the lookup, so no change committed after it goes unnoticed.
        self.close = box.subscribe(self._changed)
        if uids is not None:
            try:
                self.load(uids)
            except BaseException:
                self.close()
                raise

    def load(self, uids: list[int], known: Mapping[int, str] | None = None) -> None:
        """Take the maildrop's UIDs; only those not in `known` are looked up."""
        self._uids = uids
        if not known:
            self._paths = self._lookup(uids)
            return
        paths = {uid: known[uid] for uid in uids if uid in known}
        if len(paths) < len(uids):
            paths.update(self._lookup([uid for uid in uids if uid not in paths]))
        self._paths = paths

    @property
    def paths(self) -> dict[int, str]:
        return self._paths

    def _lookup(self, uids: list[int]) -> dict[int, str]:
        return {uid: os.fspath(path) for uid, path in self._box.body_paths(INBOX, uids).items()}

    def _changed(self) -> None:
        self._stale = True  # on the store's notifier thread: the lookup waits for a RETR

    def path(self, uid: int) -> str | None:
        """The message's file as the store has it now (None: not known)."""
        if self._stale:
            self._stale = False
            self._paths = self._lookup(self._uids)
        return self._paths.get(uid)

    def read(self, uid: int) -> bytes:
        """The stored message; StoreError once it is gone."""
        return self.read_with_path(uid)[0]

    def read_with_path(self, uid: int) -> tuple[bytes, str | None]:
        """The stored message and the file it came from (None: read through the store)."""
        if self._stale:
            self._stale = False
            self._paths = self._lookup(self._uids)
        path = self._paths.get(uid)
        if path is None:
            return self._box.read(INBOX, uid), None  # a store without files, or gone: StoreError
        try:
            return read_file(path), path
        except FileNotFoundError:
            # Gone, or (were a store ever to move bodies) elsewhere: the store knows.
            return self._box.read(INBOX, uid), None


class BodyPaths:
    """The body files of recently opened maildrops, kept across sessions so that a mailbox
    downloaded again (leave-on-server clients, polling) costs no lookup of the messages
    already seen. Keyed by mailbox and UIDVALIDITY; the least recently used maildrops are
    forgotten beyond `limit` messages in all. Logins run in worker threads: locked."""

    def __init__(self, limit: int = 200_000) -> None:
        self._limit = limit
        self._boxes: OrderedDict[tuple[str, int], dict[int, str]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def get(self, mailbox: str, uidvalidity: int) -> dict[int, str] | None:
        key = (mailbox.lower(), uidvalidity)
        with self._lock:
            paths = self._boxes.get(key)
            if paths is not None:
                self._boxes.move_to_end(key)
            return paths

    def put(self, mailbox: str, uidvalidity: int, paths: dict[int, str]) -> None:
        """`paths` becomes the mailbox's entry (it is never changed afterwards)."""
        key = (mailbox.lower(), uidvalidity)
        with self._lock:
            old = self._boxes.pop(key, None)
            self._count -= len(old) if old else 0
            if len(paths) > self._limit:
                return
            self._boxes[key] = paths
            self._count += len(paths)
            while self._count > self._limit:
                _, dropped = self._boxes.popitem(last=False)
                self._count -= len(dropped)


def read_file(path: str) -> bytes:
    """A whole file with plain os calls (no buffered file object, no fstat). A short read
    of a regular file means its end, so a message smaller than READ_SIZE costs one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, READ_SIZE)
        if len(data) < READ_SIZE:
            return data
        parts = [data]
        while len(chunk := os.read(fd, FILE_CHUNK)) == FILE_CHUNK:
            parts.append(chunk)
        parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


@dataclass(eq=False)
class OpenMaildrop:
    """A locked maildrop: what one POP3 session reads and, in UPDATE, changes."""

    mailbox: str
    box: MailboxStore
    release: Callable[[], None]
    maildrop: Maildrop
    files: MaildropFiles
    view: RetrievalView  # what RETR/TOP send (formats, calendar, receipts)

    def __post_init__(self) -> None:
        # The view's options are fixed for the session: asked once, not at every RETR.
        self.as_stored = self.view.as_stored

    def small(self, msg: int) -> bool:
        """Whether message `msg` (1-based) is small enough to read on the event loop."""
        return self.maildrop.messages[msg - 1].size <= INLINE_READ_LIMIT

    def source(self, msg: int, lines: int | None) -> tuple[bytes | FileBody, bool] | None:
        """(what RETR, or TOP with `lines`, sends of message `msg` (1-based), whether it is
        wire-ready); None: the message is gone. A FileBody is sent from its open file and
        is always wire-ready."""
        message = self.maildrop.messages[msg - 1]
        uid = message.uid
        # Only a file bigger than WRITE_SLICE is streamed, and the size the maildrop lists
        # is never below the file's (the stored size, or with exact sizes the rendered one,
        # which only adds CRs): a smaller message skips the open and fstat of file_body.
        if message.size > WRITE_SLICE:
            streamed = self.file_body(uid, lines)
            if streamed is not None:
                return streamed, True
        try:
            raw, path = self.files.read_with_path(uid)
        except StoreError:
            return None
        view = self.view
        facts = FILE_FACTS.of(path, raw)
        if lines is None and facts & ASKS_RECEIPT and view.sends_receipts:
            assert view.receipts is not None
            view.receipts.downloaded(self.box, INBOX, uid, frozenset(), self.mailbox, raw)
        if self.as_stored:
            return (raw, True) if facts & WIRE_READY else (crlf_lines(raw), False)
        return crlf_lines(view.data(uid, raw)), False

    def file_body(self, uid: int, lines: int | None) -> FileBody | None:
        """A RETR of a big message that goes out as stored and needs no byte-stuffing (and
        no read receipt): its open file, to be sent a slice at a time."""
        view = self.view
        if lines is not None or not view.as_stored:
            return None
        path = self.files.path(uid)
        if path is None:
            return None
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by whoever sends it
        except FileNotFoundError:
            return None  # gone: the ordinary read says so
        size = os.fstat(file.fileno()).st_size
        facts = FILE_FACTS.of_file(path, file) if size > WRITE_SLICE else None
        if (
            facts is None
            or not facts & WIRE_READY
            or (facts & ASKS_RECEIPT and view.sends_receipts)
        ):
            file.close()
            return None
        file.seek(0)
        return FileBody(file, size)

    def update(self, delete: tuple[int, ...], seen: tuple[int, ...]) -> None:
        apply_update(self.box, delete, seen)


def open_maildrop(
    box: MailboxStore,
    name: str,
    mailbox: Mailbox,
    pop: Callable[[], PopSettings],
    view_for: Callable[[int], RetrievalView],
    body_paths: BodyPaths,
) -> OpenMaildrop:
    """Lock the INBOX of mailbox `name` and list it; MailboxInUse when another session has
    it. `view_for(uidvalidity)` is the session's RetrievalView; `pop()` the live POP
    settings."""
    release = box.lock_maildrop()
    try:
        files = MaildropFiles(box)  # subscribed before the snapshot: see load()
    except BaseException:
        release()
        raise
    try:
        options = PopOptions.of(pop(), mailbox)
        snapshot = box.snapshot(INBOX)
        uidvalidity = snapshot.status.uidvalidity
        view = view_for(uidvalidity)
        if view.as_stored:
            rows = message_sizes(
                box,
                [(r.uid, r.size) for r in snapshot.rows],
                options.exact_size,
                lambda raw: render_for_retrieval(raw, mailbox, pop()),
            )
        else:  # estimated, or with exact sizes what RETR sends (RetrievalView.size);
            # RETR renders each message when it is retrieved
            rows = [
                (r.uid, view.size(r.uid, r.size, partial(box.read, INBOX, r.uid)))
                for r in snapshot.rows
            ]
        maildrop = build_maildrop(uidvalidity, rows, options.descending)
        files.load([uid for uid, _ in rows], body_paths.get(name, uidvalidity))
        # The new dict: the entry is never the one a running session reads from.
        body_paths.put(name, uidvalidity, files.paths)
    except BaseException:
        files.close()
        release()
        raise

    def release_all() -> None:
        files.close()
        release()

    return OpenMaildrop(name, box, release_all, maildrop, files, view)


def apply_update(box: MailboxStore, delete: tuple[int, ...], seen: tuple[int, ...]) -> None:
    """RFC 1939 section 6 UPDATE: downloaded messages become \\Seen (Exchange marks POP3
    downloads read) and exactly the DELE'd UIDs are expunged, in one store transaction;
    other messages an IMAP client flagged \\Deleted stay. All or nothing, and IMAP
    sessions never see the DELE'd messages flagged \\Deleted before they vanish.
    A session that deletes nothing and downloaded only messages already \\Seen (a
    leave-on-server client downloading again) changes nothing: a read of the folder's
    (cached) state instead of a write transaction."""
    if not delete and seen:
        already = {row.uid for row in box.snapshot(INBOX).rows if "\\Seen" in row.flags}
        if already.issuperset(seen):
            return
    if delete or seen:
        box.delete_messages(INBOX, list(delete), also_seen=list(seen))
