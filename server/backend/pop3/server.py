"""MSExchangePOP3BE: the POP3 back end, the sans-IO session over the mailbox store.

It accepts only front ends: every connection starts with the hand-over (server/protocols/
handover.py, run by BackendService.hand_over), in which the front end proves it knows the
proxy secret and names the mailbox and the real client. POP3 then begins in the TRANSACTION
state, its greeting the maildrop's size, so no POP3 command from an unproved peer is ever
parsed. The maildrop is the mailbox's INBOX, locked for the whole
session (RFC 1939 section 8: one session per maildrop); deletions happen only in UPDATE after
QUIT, in one store call, so a dropped connection deletes nothing. IMAP sessions on the same
mailbox keep working and see the deletions as EXPUNGEs through the store's notifications.

Settings are read from ctx.settings at each use: Banner at the greeting, MaxCommandSize at
each command, the timeouts at each read, MessageRetrievalSortOrder / EnableExactRFC822Size /
MessageRetrievalMimeFormat / CalendarItemRetrievalOption / SuppressReadReceipt at login
(message numbers, sizes and the bytes they measure are fixed for a session: server.retrieval
renders them). With the options that leave messages as stored, RETR sends the body file's
bytes with no rendering step.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

from server.backend import service as common
from server.protocols import proxyv2
from server.protocols.pop3.responses import Capabilities
from server.protocols.pop3.session import (
    Authenticate,
    Close,
    Maildrop,
    Pop3Session,
    Request,
    Retrieve,
    Send,
    SessionSettings,
    Update,
    build_maildrop,
)
from server.retrieval import RetrievalView
from server.runtime.service import ServiceContext
from server.settings.models import Mailbox, PopSettings, Server, Settings
from server.settings.types import SortOrder
from server.store.api import MailboxInUse, MailboxStore, StoreError

INBOX = "INBOX"
READ_SIZE = 64 * 1024
FILE_CHUNK = 1024 * 1024  # reads after the first READ_SIZE of a large body file
FLUSH_AT = 256 * 1024  # write out pipelined replies once this much is waiting
WRITE_HIGH_WATER = 64 * 1024  # asyncio's default: wait for the client above this
WRITE_SLICE = 1024 * 1024  # a big RETR is handed to the transport this much at a time
INLINE_READ_LIMIT = (
    256 * 1024
)  # smaller messages are read on the event loop (cheaper than a thread hop)

# The back end repeats what front ends offer before login (RFC 2449 section 5): USER there
# is checked by the front end, here only the proxy's AUTH PLAIN is accepted.
CAPABILITIES = Capabilities(sasl=("PLAIN",), user=True, stls=False)


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
    _Connection._flush): a big message is never held whole. The session only takes its
    length (for "+OK n octets") and hands it back in a Send."""

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


class IdleTimer:
    """One timer handle per connection rather than one per read (asyncio.wait_for makes a
    task and a timer for every command): arming and disarming only move a deadline, and
    the handle, when it fires before the deadline, sets itself again for the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        handle = self._handle
        if handle is not None and handle.when() > deadline:  # a shorter timeout than before
            handle.cancel()
            handle = None
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        self._deadline = None  # busy answering: the handle, if it fires, waits for arm()

    def cancel(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._expire()


@dataclass(eq=False)
class _Login:
    mailbox: str
    box: MailboxStore
    release: Callable[[], None]
    maildrop: Maildrop
    files: MaildropFiles
    view: RetrievalView | None = None  # what RETR/TOP send (formats, calendar, receipts)


@dataclass(eq=False)
class _Connection:
    service: Pop3BackendService
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client: proxyv2.ProxyInfo | None = None
    session: Pop3Session = field(init=False)
    login: _Login | None = None
    session_id: int = 0
    started: float = 0.0  # when the bytes being answered arrived (for log durations)

    def __post_init__(self) -> None:
        self.session = Pop3Session(self.service.session_settings)
        self.session_id = next(self.service.session_ids)
        self.started = time.monotonic()

    async def run(self, login: _Login) -> None:
        self.login = login
        greeting = self.session.preauthenticated(login.mailbox, login.maildrop)
        self.writer.write(greeting)
        self._log(Request("OpenSession"), greeting, len(greeting))
        loop = asyncio.get_running_loop()
        # RFC 1939 section 3: an idle client is dropped without UPDATE and without a reply.
        # Closing the transport ends the pending read with EOF.
        idle = IdleTimer(loop, self.writer.transport.close)
        try:
            while True:
                idle.arm(self._timeout())
                data = await self.reader.read(READ_SIZE)
                idle.disarm()
                if not data:
                    return
                self.started = time.monotonic()
                self.session.receive(data)
                if not await self._answer():
                    return
        finally:
            idle.cancel()

    def _timeout(self) -> float:
        pre, authenticated = self.service.timeouts()
        return authenticated if self.session.authenticated else pre

    async def _answer(self) -> bool:
        """Run the session's actions until it needs more input; False: close."""
        out: list[bytes] = []
        waiting = 0
        while (action := self.session.next_action()) is not None:
            match action:
                case Send(chunks=chunks, request=request):
                    out.extend(chunks)
                    size = sum(map(len, chunks))
                    waiting += size
                    self._log(request, chunks[0], size)
                    if waiting >= FLUSH_AT:
                        await self._flush(out)
                        waiting = 0
                case Authenticate():  # sessions start authenticated: never reached
                    self.session.auth_failed("[AUTH] Only the front-end hand-over logs in here")
                case Retrieve():
                    if self._inline(action):
                        self._retrieve(action)
                    else:
                        await self._retrieve_async(action)
                case Update():
                    await self._update(action)
                case Close():
                    await self._flush(out)
                    return False
        await self._flush(out)
        return True

    def _log(self, request: Request, first: bytes, size: int) -> None:
        log = self.service.protocol_log
        if not log.enabled:
            return
        local = self.writer.get_extra_info("sockname") or ("", 0)
        client = (
            (self.client.client_address, self.client.client_port)
            if self.client
            else (self.writer.get_extra_info("peername") or ("", 0))
        )
        log.command(
            self.session_id,
            f"{local[0]}:{local[1]}",
            f"{client[0]}:{client[1]}",
            self.login.mailbox if self.login else None,
            (time.monotonic() - self.started) * 1000,
            request.size,
            size,
            request.command,
            request.parameters,
            "R=OK" if first.startswith(b"+") else "R=ERR",
        )

    async def _flush(self, out: list[bytes]) -> None:
        """One write for what is waiting; waits for the client only when the transport's
        buffer is over the high-water mark (a drain() per reply costs more than the reply).
        A big message goes out in WRITE_SLICE pieces with that wait between them, so the
        transport never holds a copy of it for a client that reads slowly (or not at all)."""
        if not out:
            return
        if sum(map(len, out)) <= WRITE_SLICE:
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            await self._wait_for_client()
            return
        chunks = out[:]
        out.clear()
        for chunk in chunks:
            if isinstance(chunk, FileBody):
                await self._send_file(chunk)
                continue
            view = memoryview(chunk)
            for at in range(0, len(view), WRITE_SLICE):
                self.writer.write(view[at : at + WRITE_SLICE])
                await self._wait_for_client()

    async def _send_file(self, body: FileBody) -> None:
        left = body.size
        try:
            while left > 0:
                data = await asyncio.to_thread(body.file.read, min(WRITE_SLICE, left))
                if not data:  # body files never change; should one shrink, end its last line
                    self.writer.write(b"\r\n")
                    break
                left -= len(data)
                self.writer.write(data)
                await self._wait_for_client()
        finally:
            body.file.close()

    async def _wait_for_client(self) -> None:
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            self.service.waiting_for_clients += 1
            try:
                await self.writer.drain()
            finally:
                self.service.waiting_for_clients -= 1

    # --- login ---------------------------------------------------------------------------
    async def open_login(self, mailbox: str) -> _Login | str:
        """Open the maildrop a proved front end hands over; a str is the refusal text."""
        job = asyncio.ensure_future(asyncio.to_thread(self.service.login, mailbox))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The thread may still take the maildrop lock: give it back when it does.
            job.add_done_callback(_release_orphan)
            raise
        except StoreError as exc:
            return f"-ERR [SYS/TEMP] {exc}"
        except Exception:
            self.service.ctx.log.exception("service=%s event=login-error", self.service.ctx.name)
            return "-ERR [SYS/TEMP] The mailbox cannot be opened now"

    # --- retrieval -----------------------------------------------------------------------
    def _inline(self, action: Retrieve) -> bool:
        maildrop = self.session.maildrop
        assert maildrop is not None
        return maildrop.messages[action.msg - 1].size <= INLINE_READ_LIMIT

    def _read(self, action: Retrieve) -> tuple[bytes | FileBody, bool] | None:
        """(what RETR/TOP send, whether it is wire-ready); None: the message is gone."""
        login = self.login
        assert login is not None
        streamed = self._file_body(action)
        if streamed is not None:
            return streamed, True
        try:
            raw, path = login.files.read_with_path(action.uid)
        except StoreError:
            return None
        view = login.view
        if view is None:
            return self.service.render(login.mailbox, raw), False
        facts = FILE_FACTS.of(path, raw)
        if action.lines is None and facts & ASKS_RECEIPT and view.sends_receipts:
            assert view.receipts is not None
            view.receipts.downloaded(login.box, INBOX, action.uid, frozenset(), login.mailbox, raw)
        if view.as_stored:
            return (raw, True) if facts & WIRE_READY else (crlf_lines(raw), False)
        return crlf_lines(view.data(action.uid, raw)), False

    def _file_body(self, action: Retrieve) -> FileBody | None:
        """A RETR of a big message that goes out as stored and needs no byte-stuffing (and
        no read receipt): its open file, to be sent a slice at a time."""
        login = self.login
        assert login is not None
        view = login.view
        if action.lines is not None or view is None or not view.as_stored:
            return None
        path = login.files.path(action.uid)
        if path is None:
            return None
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by _send_file
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

    def _deliver(self, action: Retrieve, read: tuple[bytes | FileBody, bool] | None) -> None:
        if read is None:
            self.session.retrieve_failed(f"Message {action.msg} is no longer available")
        else:
            # A FileBody passes through the session untouched (wire-ready: only its length
            # is used) and comes back to _flush in a Send.
            self.session.retrieved(read[0], wire_ready=read[1])  # type: ignore[arg-type]

    def _retrieve(self, action: Retrieve) -> None:
        self._deliver(action, self._read(action))

    async def _retrieve_async(self, action: Retrieve) -> None:
        self._deliver(action, await asyncio.to_thread(self._read, action))

    # --- UPDATE --------------------------------------------------------------------------
    async def _update(self, action: Update) -> None:
        assert self.login is not None
        try:
            await asyncio.to_thread(apply_update, self.login.box, action.delete, action.seen)
        except StoreError:
            self.session.updated("Some deleted messages were not removed")
        else:
            self.session.updated(None)

    def release(self) -> None:
        if self.login is not None:
            self.login.release()
            self.login = None


def _release_orphan(job: asyncio.Future[_Login | str]) -> None:
    if not job.cancelled() and job.exception() is None:
        result = job.result()
        if isinstance(result, _Login):
            result.release()


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


class Pop3BackendService(common.BackendService):
    CERTIFICATE = "POP"

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._session_settings: tuple[Settings, SessionSettings] | None = None
        self._timeouts: tuple[Settings, tuple[float, float]] | None = None
        self.body_paths = BodyPaths()
        self.waiting_for_clients = 0  # connections in drain(): their client reads slowly

    # --- settings ------------------------------------------------------------------------
    def pop_settings(self) -> PopSettings:
        return self.ctx.server_settings.PopSettings

    def ports(self, server: Server) -> tuple[int, int]:
        return server.PopBackEndPort, server.PopBackEndSSLPort

    def timeouts(self) -> tuple[float, float]:
        """(PreAuthenticatedConnectionTimeout, AuthenticatedConnectionTimeout) in seconds,
        derived once per settings object (a reload replaces it) rather than at every read."""
        cached = self._timeouts
        if cached is not None and cached[0] is self.ctx.settings:
            return cached[1]
        pop = self.pop_settings()
        built = (
            pop.PreAuthenticatedConnectionTimeout.total_seconds(),
            pop.AuthenticatedConnectionTimeout.total_seconds(),
        )
        self._timeouts = (self.ctx.settings, built)
        return built

    def session_settings(self) -> SessionSettings:
        cached = self._session_settings
        if cached is not None and cached[0] is self.ctx.settings:
            return cached[1]
        pop = self.pop_settings()
        built = SessionSettings(
            banner=pop.Banner,
            max_command_size=pop.MaxCommandSize,
            capabilities=CAPABILITIES,
            user_pass=False,
            server_name=f"{self.ctx.server_settings.Fqdn} POP3 server",
        )
        self._session_settings = (self.ctx.settings, built)
        return built

    def render(self, mailbox: str, raw: bytes) -> bytes:
        found = self.ctx.settings.mailbox(mailbox)
        return render_for_retrieval(raw, found[1] if found else None, self.pop_settings())

    # --- service -------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """POP3 has no unsolicited goodbye: stop accepting, let sessions end by themselves
        for up to `grace` seconds, then close the rest without UPDATE (nothing is deleted)."""
        self._listeners.close()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                # Aborting the transport ends the session's read with EOF, so the handler
                # returns normally (a cancelled stream handler makes asyncio log an error).
                self._connections[task].transport.abort()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self._close_store()

    # --- connections ---------------------------------------------------------------------
    def _handler_for(self, implicit_tls: bool):  # noqa: ANN202 - ListenerSet's Handler type
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer)

        return handle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        connection: _Connection | None = None
        try:
            opening = _Connection(self, reader, writer)
            handed = await self.hand_over(
                reader, writer, "POP3", lambda accepted: opening.open_login(accepted.mailbox)
            )
            if handed is None:
                return
            accepted, login = handed
            connection = opening
            connection.client = accepted.client
            await connection.run(login)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:  # a bug ends this session, never the service
            self.ctx.log.exception("service=%s event=session-error", self.ctx.name)
        finally:
            self._connections.pop(task, None)
            if connection is not None:
                connection.release()
                self.protocol_log.end(connection.session_id)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- login (in a worker thread) ------------------------------------------------------
    def login(self, mailbox: str) -> _Login | str:
        """Open the maildrop of a mailbox a proved front end hands over; a str is the
        refusal, as the -ERR text the front end passes on."""
        settings = self.ctx.settings
        try:
            entry = common.check_hand_over(self.ctx, settings, "POP3", mailbox)
        except common.HandOverRefused as refused:
            code = "[SYS/PERM]" if refused.kind == "perm" else "[AUTH]"
            return f"-ERR {code} {refused.text}"
        name, box = entry.name, entry.mailbox
        assert self._store is not None
        mailbox = self._store.mailbox(name)
        try:
            release = mailbox.lock_maildrop()
        except MailboxInUse:
            return "-ERR [IN-USE] Maildrop is in use by another session"
        try:
            files = MaildropFiles(mailbox)  # subscribed before the snapshot: see load()
        except BaseException:
            release()
            raise
        try:
            options = PopOptions.of(self.pop_settings(), box)
            snapshot = mailbox.snapshot(INBOX)
            view = common.retrieval_view(
                settings,
                self.ctx.server,
                "POP3",
                name,
                INBOX,
                snapshot.status.uidvalidity,
                self.receipt_sender(),
            )
            if view.as_stored:
                rows = message_sizes(
                    mailbox,
                    [(r.uid, r.size) for r in snapshot.rows],
                    options.exact_size,
                    lambda raw: render_for_retrieval(raw, box, self.pop_settings()),
                )
            else:  # estimated, or with exact sizes what RETR sends (RetrievalView.size);
                # RETR renders each message when it is retrieved
                rows = [
                    (r.uid, view.size(r.uid, r.size, partial(mailbox.read, INBOX, r.uid)))
                    for r in snapshot.rows
                ]
            uidvalidity = snapshot.status.uidvalidity
            maildrop = build_maildrop(uidvalidity, rows, options.descending)
            files.load([uid for uid, _ in rows], self.body_paths.get(name, uidvalidity))
            # The new dict: the entry is never the one a running session reads from.
            self.body_paths.put(name, uidvalidity, files.paths)
        except BaseException:
            files.close()
            release()
            raise

        def release_all() -> None:
            files.close()
            release()

        return _Login(name, mailbox, release_all, maildrop, files, view)
