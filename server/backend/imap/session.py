"""The IMAP4rev1 back-end session: a sans-IO state machine over the mailbox store.

The I/O layer (server/backend/imap/server.py) drives it like this::

    session = ImapSession(config, commands.TABLE)   # commands: server.backend.imap.commands
    send(session.greeting())
    on bytes from the client:   session.receive(data)
                                while (job := session.next_job()) is not None:
                                    out = job.run()  if not job.blocking
                                          else await to_thread(job.run)   # one at a time
                                    send(out)
                                    if session.closed: close the connection
    on a store notification:    session.mark_dirty(); if session.idle_pending: run
                                the IDLE fan-out's push job the same way (fanout.py)

A job is one client command (or a continuation request, or a BAD); jobs of a session run
strictly one after another, so the session is never touched by two threads at once.
Everything that calls the store is `blocking` and runs in a worker thread; store calls are
synchronous per the store contract. Attributes the I/O layer reads after each job:
`closed`, `idling`, `mailbox` (subscribe to it once it is set), `authenticated`,
`compression` (once set by COMPRESS, deflate everything written after that job's output;
the I/O layer sets `direct` when no front end relays the connection).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.backend.imap.spool import BodySpool
from server.protocols.imap import requests as rq
from server.protocols.imap.compress import CompressError, Deflate
from server.protocols.imap.reader import CommandReader
from server.protocols.imap.seqset import RangeSet, SeqSet, format_seqset
from server.settings.models import ImapSettings, Mailbox, Settings
from server.store import api

if TYPE_CHECKING:
    from server.protocols.imap.bodystructure import MessageInfo
    from server.retrieval.receipts import ReceiptSender

log = logging.getLogger("mailctl.imap")

#: Largest literal (APPEND message) accepted; bigger ones are refused before any is read.
MAX_LITERAL_SIZE = 50 * 1024 * 1024

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = (
    "not-authenticated",
    "authenticated",
    "selected",
    "logout",
)

# What the back end implements, exactly (RFC 3501 7.2.1: CAPABILITY lists what works).
CAPABILITIES_COMMON = (
    "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE "
    "SPECIAL-USE CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC ESEARCH "
    "SEARCHRES STATUS=SIZE QUOTA QUOTA=RES-STORAGE NOTIFY"
    " SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES ESORT CONTEXT=SEARCH CONTEXT=SORT"
)
CAPABILITIES_PREAUTH = CAPABILITIES_COMMON + " AUTH=PLAIN LOGINDISABLED"
# After login only: APPEND extensions, BINARY and URLAUTH need an authenticated user.
CAPABILITIES_AUTH = CAPABILITIES_COMMON + " BINARY MULTIAPPEND CATENATE URLAUTH URLAUTH=BINARY"

KEEPALIVE_SECONDS = 110  # "* OK Still here" during IDLE, under the 2-minute promise


class No(Exception):
    """Finish the command with a tagged NO."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class SelectedGone(Exception):
    """The selected folder was deleted, or replaced by a new folder of the same name, by
    another session: its UIDs and sequence numbers mean nothing any more, so the session
    ends with BYE (as Dovecot does) rather than serve another folder's messages under them."""


class Bad(Exception):
    """Finish the command with a tagged BAD."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True)
class Login:
    """A successful login: the user's mailbox in the store and its directory settings."""

    name: str
    store: api.MailboxStore
    mailbox: Mailbox | None = None


# authenticate(authzid, authcid, password) -> Login, or a reason for NO. Blocking.
Authenticator = Callable[[str, str, str], "Login | str"]


class InfoCache:
    """Parsed MIME metadata shared by the sessions of a process. Messages never change, so
    (mailbox, folder, uidvalidity, uid) names one MessageInfo for ever. Thread-safe enough:
    dict operations are atomic under the GIL, and a lost race only costs a second lookup."""

    def __init__(self, limit: int = 20000) -> None:
        self.limit = limit
        self._data: dict[tuple[str, str, int, int], object] = {}

    def get(self, key: tuple[str, str, int, int]) -> object | None:
        return self._data.get(key)

    def put(self, key: tuple[str, str, int, int], value: object) -> None:
        data = self._data
        if len(data) >= self.limit:
            # Drop the oldest quarter (dicts keep insertion order): cheap, no per-hit bookkeeping.
            for k in list(data)[: self.limit // 4]:
                data.pop(k, None)
        data[key] = value


@dataclass
class SessionConfig:
    settings: Callable[[], Settings]  # live: read at each use
    server: str
    authenticate: Authenticator
    info_cache: InfoCache = field(default_factory=InfoCache)
    client_address: str = ""
    server_version: str = "mailctl"
    receipts: ReceiptSender | None = None  # read receipts on download (server.retrieval)
    # Another user's mailbox by name or address when this back end holds it, else None
    # (URLAUTH URLs name the mailbox's owner). Blocking.
    open_mailbox: Callable[[str], api.MailboxStore | None] | None = None

    def imap_settings(self) -> ImapSettings:
        return self.settings().server(self.server).ImapSettings


@dataclass(slots=True)
class Job:
    """One step of the session. `name`/`tag` say which client command it serves (for the
    protocol log: the command is finished when the output holds its tagged status line);
    `command` is the parsed command when there is one. Pushes and continuations have none.
    `inline` marks a blocking job that may run on the I/O thread (see below)."""

    blocking: bool
    run: Callable[[], bytes]
    name: str = ""
    tag: str | None = None
    command: rq.Command | None = None
    # A blocking job that only reads the store (no write, so no lock to wait for) and
    # does bounded work: the I/O layer may run it in place, saving the thread hand-off
    # that costs more than a small FETCH itself.
    inline: bool = False


class Selected:
    """The selected folder as this session knows it (RFC 3501 sequence numbers)."""

    __slots__ = (
        "name",
        "readonly",
        "uidvalidity",
        "uids",
        "rows",
        "modseq",
        "recent",
        "pending_vanished",
        "uidnext",
        "keywords",
    )

    def __init__(self, name: str, readonly: bool, snapshot: api.FolderSnapshot) -> None:
        self.name = name
        self.readonly = readonly
        st = snapshot.status
        self.uidvalidity = st.uidvalidity
        self.uidnext = st.uidnext
        self.rows: list[api.MessageRow] = list(snapshot.rows)
        self.uids: list[int] = [r.uid for r in self.rows]
        self.modseq = st.highestmodseq
        self.recent: set[int] = set()
        # Expunged by others but not yet told to the client (no EXPUNGE during FETCH,
        # STORE or SEARCH: RFC 3501 7.4.1); the messages stay addressable until then.
        self.pending_vanished: set[int] = set()
        # The keywords the client was told of in FLAGS (see ImapSession.announce_keywords).
        self.keywords: set[str] = {f for r in self.rows for f in r.flags if f[:1] != "\\"}

    @property
    def exists(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return -1

    def remove(self, gone: set[int]) -> list[int]:
        """Drop expunged UIDs; returns their (old) sequence numbers, ascending."""
        seqs = [i + 1 for i, u in enumerate(self.uids) if u in gone]
        if seqs:
            self.rows = [r for r in self.rows if r.uid not in gone]
            self.uids = [r.uid for r in self.rows]
            self.recent -= gone
        self.pending_vanished -= gone
        return seqs


HandlerFunc = Callable[["ImapSession", rq.Command], "bytes | None"]
InlineTest = Callable[["ImapSession", rq.Command], bool]


@dataclass(frozen=True, slots=True)
class Handler:
    """How the session runs one command type: `func(session, command)` sends untagged
    responses through `session.untagged()` and returns the tagged completion (None means
    "OK <NAME> completed", b"" that the command is not finished yet, e.g. IDLE), or raises
    No / Bad."""

    func: HandlerFunc
    states: frozenset[str]
    blocking: bool  # touches the store: run in a worker thread
    # When it says so for a command, that command only reads the store and does bounded
    # work: the I/O layer may run it in place (session.Job.inline).
    inline: InlineTest | None = None


@dataclass(frozen=True, slots=True)
class CommandTable:
    """The commands a session runs, handed to it at construction (built by
    server.backend.imap.commands, which imports this module, never the other way round):
    a Handler per request type, and the hooks for what is not a command - the line that
    ends IDLE, an AUTHENTICATE response, the live SEARCH/SORT contexts after each step."""

    handlers: Mapping[type, Handler]
    end_idle: Callable[[ImapSession, bytes], bytes]
    auth_continue: Callable[[ImapSession, bytes], bytes]
    emit_updates: Callable[[ImapSession], None]


class ImapSession:
    def __init__(self, config: SessionConfig, commands: CommandTable) -> None:
        self.config = config
        self.commands = commands
        settings = config.imap_settings()
        self.reader = CommandReader(
            max_command_size=settings.MaxCommandSize, max_literal_size=MAX_LITERAL_SIZE
        )
        self.reader.spool_factory = self._new_spool
        self.state = NOT_AUTHENTICATED
        self.login: Login | None = None
        self.selected: Selected | None = None
        self.closed = False
        self.idling = False
        self.idle_tag: str | None = None
        self.auth_tag: str | None = None  # AUTHENTICATE waiting for the client's response
        self.dirty = False
        self.woken_at = 0  # the store's change generation at the last mark_dirty()
        self.condstore = False
        self.qresync = False
        # ENABLE IMAP4rev2 (RFC 9051): no \Recent or RECENT, SEARCH answers ESEARCH, mailbox
        # names in UTF-8, \NonExistent for mere hierarchy levels.
        self.rev2 = False
        self.saved: list[int] | None = None  # SEARCHRES result ($), as UIDs
        self.notify: object | None = None  # NOTIFY (RFC 5465) state, see commands.notify
        # The last FETCH's retrieval view and what it was made from (see commands.fetch).
        self.retrieval: tuple[object, ...] | None = None
        # Live SEARCH/SORT results by tag (RFC 5267 contexts, see commands.context) and
        # the folder's UIDs when they were last brought up to date.
        self.contexts: dict[str, object] = {}
        self.context_view: list[int] = []
        # The client's own connection, no front end relaying it (a handed-off plaintext
        # session): COMPRESS is then this session's to do (commands.compress).
        self.direct = False
        # COMPRESS=DEFLATE in force: receive() inflates, and the I/O layer deflates all it
        # writes after the command's OK.
        self.compression: Deflate | None = None
        self._broken: str | None = None  # the client's stream cannot be read on: BYE
        self.out: list[bytes] = []
        self._resume: (
            tuple[Callable[[ImapSession, rq.Command], bytes | None], rq.Command] | None
        ) = None

    # --- what the I/O layer calls ------------------------------------------------------
    @property
    def authenticated(self) -> bool:
        return self.login is not None

    @property
    def mailbox(self) -> api.MailboxStore | None:
        return self.login.store if self.login else None

    def greeting(self) -> bytes:
        banner = self.config.imap_settings().Banner or "IMAP4rev1 service ready"
        return b"* OK [CAPABILITY %s] %s\r\n" % (CAPABILITIES_PREAUTH.encode(), _line(banner))

    def preauth(self, login: Login) -> bytes:
        """Start authenticated, as `login` (the back end's hand-over named the mailbox):
        the PREAUTH greeting of RFC 3501 section 7.1.4, with the capabilities in force."""
        self.login = login
        self.state = AUTHENTICATED
        return b"* PREAUTH [CAPABILITY %s] Logged in as %s\r\n" % (
            CAPABILITIES_AUTH.encode(),
            _line(login.name),
        )

    def bye(self, text: str) -> bytes:
        self.closed = True
        return b"* BYE " + _line(text) + b"\r\n"

    def selected_gone(self) -> bytes:
        """The BYE that ends a session whose selected folder is gone (SelectedGone)."""
        self.selected = None
        return self.bye("Selected mailbox was deleted, have to disconnect.")

    def receive(self, data: bytes) -> None:
        if self.compression is not None:
            if self._broken is not None:
                return
            try:
                data = self.compression.inflate(data)
            except CompressError as exc:
                # The commands inflated before still run; then BYE (next_job).
                self._broken = str(exc)
                return
        self.reader.feed(data)

    def start_compression(self) -> None:
        """COMPRESS DEFLATE accepted: all the client sends after the command's CRLF is
        compressed - also what it pipelined behind COMPRESS that is read already."""
        self.compression = Deflate()
        pipelined = self.reader.take_buffer()
        if pipelined:
            self.receive(pipelined)

    def release(self) -> None:
        """The connection is gone: throw away a literal being streamed into the store."""
        self.reader.discard_buffer()

    def _new_spool(self, size: int, binary: bool) -> rq.Spool | None:
        if self.login is None:
            return None
        return BodySpool.open(self.login.store, binary)

    def mark_dirty(self) -> None:
        # woken_at first: a push in a worker thread clears `dirty` and then reads
        # woken_at, so it either sees this generation or leaves the session dirty.
        if self.login is not None:
            self.woken_at = self.login.store.change_generation() or 0
        self.dirty = True

    def next_job(self) -> Job | None:
        if self.closed:
            return None
        if self._resume is not None:
            func, cmd = self._resume
            self._resume = None
            return Job(True, lambda: self._run(func, cmd), cmd.name, cmd.tag, cmd)
        if not self.reader.line_mode:
            # Live setting: the next command is measured against today's MaxCommandSize.
            self.reader.max_command_size = self.config.imap_settings().MaxCommandSize
        event = self.reader.next_event()
        if event is None:
            if self.reader.closing:  # a huge refused LITERAL+ (reader.MAX_SKIP_SIZE)
                return Job(False, lambda: self.bye("[TOOBIG] Literal too large"))
            if self._broken is not None:
                broken = self._broken
                return Job(False, lambda: self.bye(broken))
            return None
        if isinstance(event, rq.Command):
            return self._command_job(event)
        if isinstance(event, rq.RawLine):
            return self._raw_line_job(event.line)
        return Job(False, lambda: self._reader_event(event), *_event_name(event))

    @property
    def idle_pending(self) -> bool:
        """In IDLE with a wake-up not pushed yet (server/backend/imap/fanout.py pushes it)."""
        return self.idling and self.dirty and self.selected is not None

    def keepalive(self) -> bytes:
        return b"* OK Still here\r\n"

    # --- dispatch ---------------------------------------------------------------------
    def _reader_event(self, event: rq.Event) -> bytes:
        if isinstance(event, rq.NeedContinuation):
            return b"+ " + event.text.encode() + b"\r\n"
        if isinstance(event, rq.ParseError):
            return _tagged(event.tag, b"BAD", event.message)
        if isinstance(event, rq.BadCharset):
            return _tagged(event.tag, b"NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
        if isinstance(event, rq.CommandTooLong):
            return _tagged(event.tag, b"BAD", "Command line too long")
        if isinstance(event, rq.LiteralTooLarge):
            return _tagged(event.tag, b"NO", "Literal too large", "TOOBIG")
        return b""

    def _command_job(self, cmd: rq.Command) -> Job:
        handler = self.commands.handlers.get(type(cmd.args))
        if handler is None:
            return Job(
                False,
                lambda: _tagged(cmd.tag, b"BAD", f"{cmd.name} is not supported"),
                cmd.name,
                cmd.tag,
                cmd,
            )
        if self.state not in handler.states:
            text = {
                NOT_AUTHENTICATED: "Authenticate first",
                AUTHENTICATED: "No mailbox selected"
                if SELECTED in handler.states
                else "Wrong state",
            }.get(self.state, "Command not valid in this state")
            return Job(False, lambda: _tagged(cmd.tag, b"BAD", text), cmd.name, cmd.tag, cmd)
        inline = (
            handler.blocking
            and handler.inline is not None
            and not self.contexts
            and handler.inline(self, cmd)
        )  # live contexts are evaluated after it
        return Job(
            handler.blocking, lambda: self._run(handler.func, cmd), cmd.name, cmd.tag, cmd, inline
        )

    def _run(
        self, func: Callable[[ImapSession, rq.Command], bytes | None], cmd: rq.Command
    ) -> bytes:
        self.out = []
        try:
            bad_name = rq.invalid_mailbox_name(cmd.args)
            if bad_name is not None and not isinstance(cmd.args, rq.List | rq.Lsub):
                raise No(bad_name.reason, "CANNOT")  # LIST/LSUB: the pattern matches nothing
            tail = func(self, cmd)
            if tail is None:
                tail = _tagged(cmd.tag, b"OK", f"{cmd.name} completed")
        except No as exc:
            tail = _tagged(cmd.tag, b"NO", exc.text, exc.code)
        except Bad as exc:
            tail = _tagged(cmd.tag, b"BAD", exc.text, exc.code)
        except SelectedGone:
            tail = self.selected_gone()
        except api.NoSuchFolder as exc:
            tail = _tagged(cmd.tag, b"NO", str(exc) or "No such mailbox", "NONEXISTENT")
        except api.FolderExists as exc:
            tail = _tagged(cmd.tag, b"NO", str(exc) or "Mailbox exists", "ALREADYEXISTS")
        except api.StoreError as exc:
            tail = _tagged(cmd.tag, b"NO", str(exc) or "Operation failed")
        except Exception:  # a bug must cost one command, never the process
            log.exception("imap command %s failed", cmd.name)
            tail = _tagged(cmd.tag, b"NO", "Internal error", "SERVERBUG")
        if self.contexts:
            self._context_updates()
        out = self.out
        self.out = []
        out.append(tail)
        return b"".join(out)

    def _raw_line_job(self, line: bytes) -> Job:
        if self.idling:
            return Job(True, lambda: self.commands.end_idle(self, line), "IDLE", self.idle_tag)
        if self.auth_tag is not None:
            return Job(
                True, lambda: self.commands.auth_continue(self, line), "AUTHENTICATE", self.auth_tag
            )
        # Line mode without a reason: leave it and treat the line as a command.
        self.reader.line_mode = False
        return Job(False, lambda: b"* BAD Unexpected line\r\n")

    def push_changes(self, changes: Callable[[], tuple[api.Changes | None, bool]]) -> bytes:
        """The untagged updates of an IDLE wake-up. `changes()` gives what changed since
        the folder's MODSEQ (None: read it here) and whether to claim \\Recent; the IDLE
        fan-out (server/backend/imap/fanout.py) shares one answer between sessions."""
        self.out = []
        # Cleared before the answer is read, never after: a wake-up that comes while this
        # runs in a worker thread then leaves the session dirty for the next push.
        self.dirty = False
        try:
            found, claim = changes()
            self.sync(allow_expunge=True, changes=found, claim_recent=claim)
        except (SelectedGone, api.NoSuchFolder):
            self.out.append(self.selected_gone())
        except api.StoreError:
            log.exception("sync failed")
        if self.contexts:
            self._context_updates()
        out, self.out = self.out, []
        return b"".join(out)

    def _context_updates(self) -> None:
        try:
            self.commands.emit_updates(self)
        except Exception:  # a failed update must not cost the command's answer
            log.exception("search context update failed")
            self.contexts.clear()

    # --- helpers for handlers -----------------------------------------------------------
    def resume_with(
        self, func: Callable[[ImapSession, rq.Command], bytes | None], cmd: rq.Command
    ) -> None:
        """Finish the current command in a follow-up job (the handler returns b"" now)."""
        self._resume = (func, cmd)

    def untagged(self, data: bytes) -> None:
        self.out.append(b"* " + data + b"\r\n")

    @property
    def store(self) -> api.MailboxStore:
        assert self.login is not None
        return self.login.store

    @property
    def sel(self) -> Selected:
        assert self.selected is not None
        return self.selected

    def enable_condstore(self) -> None:
        if not self.condstore:
            self.condstore = True
            # Announce the mailbox's HIGHESTMODSEQ when CONDSTORE comes on mid-session
            # (RFC 7162 3.1.2.1 asks for it at SELECT; late enabling gets it here).
            if self.selected is not None:
                self.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % self.selected.modseq)

    def resolve(self, seqset: SeqSet, uid: bool) -> list[int]:
        """Indexes (0-based) into the selected folder for a sequence set or UID set."""
        sel = self.sel
        if seqset.saved:
            wanted = set(self.saved or ())
            return [i for i, u in enumerate(sel.uids) if u in wanted]
        if uid:
            top = sel.uids[-1] if sel.uids else 0
            ranges = seqset.resolve(top).index_ranges(sel.uids)
            return [i for a, b in ranges for i in range(a, b)]
        if sel.exists == 0:
            if seqset.uses_star or seqset.ranges:
                raise Bad("Invalid message sequence number: mailbox is empty")
        rs = seqset.resolve(sel.exists)
        if rs and rs.max > sel.exists:
            raise Bad("Invalid message sequence number")
        return [i - 1 for i in rs]

    def sync(
        self, allow_expunge: bool, changes: api.Changes | None = None, claim_recent: bool = True
    ) -> None:
        """Bring the selected folder up to date and queue the untagged responses for what
        changed (EXISTS, RECENT, FETCH flags, EXPUNGE/VANISHED when allowed). `changes`:
        the changes since the folder's MODSEQ when the caller read them (the IDLE fan-out,
        for several sessions, which then says whether this one claims \\Recent)."""
        sel = self.selected
        if sel is None:
            return
        if changes is None:  # else the caller cleared it before `changes` were read
            self.dirty = False
            try:
                changes = self.store.changes_since(sel.name, sel.modseq)
            except api.NoSuchFolder:
                raise SelectedGone() from None
        if changes.uidvalidity is not None and changes.uidvalidity != sel.uidvalidity:
            raise SelectedGone()
        if changes.highestmodseq > sel.modseq:
            sel.modseq = changes.highestmodseq
        known_max = sel.uids[-1] if sel.uids else 0
        gone = {u for u in changes.vanished if sel.index_of(u) >= 0}
        sel.pending_vanished |= gone
        new_rows = []
        # By UID: reporting expunges below renumbers the messages after them.
        flag_updates: list[int] = []
        for row in changes.changed:
            if row.uid > known_max:
                if row.uid not in changes.vanished:
                    new_rows.append(row)
                continue
            i = sel.index_of(row.uid)
            if i < 0:
                continue
            old = sel.rows[i]
            if old.flags != row.flags or (self.condstore and old.modseq != row.modseq):
                sel.rows[i] = row
                flag_updates.append(row.uid)
            else:
                sel.rows[i] = row
        self.announce_keywords(changes.changed)
        if allow_expunge and sel.pending_vanished:
            self.report_expunged(set(sel.pending_vanished))
        for uid in flag_updates:
            i = sel.index_of(uid)
            if i >= 0 and uid not in sel.pending_vanished:
                self.untagged(self.flags_fetch(i, sel.rows[i]))
        if new_rows:
            sel.rows.extend(new_rows)
            sel.uids.extend(r.uid for r in new_rows)
            sel.uidnext = max(sel.uidnext, new_rows[-1].uid + 1)
            if not sel.readonly and claim_recent:
                try:
                    claimed = self.store.claim_recent(sel.name)
                    if not self.rev2:
                        sel.recent |= claimed
                except api.StoreError:
                    pass
            self.untagged(b"%d EXISTS" % sel.exists)
            if not self.rev2:
                self.untagged(b"%d RECENT" % len(sel.recent))

    def announce_keywords(self, rows: list[api.MessageRow]) -> None:
        """Before a FETCH shows a keyword the client has not seen in FLAGS, a new FLAGS (and
        PERMANENTFLAGS) response lists it (RFC 3501 7.2.6: FLAGS names the flags in use)."""
        sel = self.selected
        if sel is None:
            return
        new = {f for r in rows for f in r.flags if f[:1] != "\\"} - sel.keywords
        if not new:
            return
        sel.keywords |= new
        self.untagged(flags_response(sel.keywords))
        if not sel.readonly:
            self.untagged(permanentflags_response(sel.keywords))

    def report_expunged(self, gone: set[int]) -> None:
        sel = self.sel
        if self.qresync:
            uids = sorted(u for u in gone if sel.index_of(u) >= 0)
            sel.remove(gone)
            if uids:
                self.untagged(b"VANISHED " + format_seqset(uids).encode())
            return
        for n, seq in enumerate(sel.remove(gone)):
            self.untagged(b"%d EXPUNGE" % (seq - n))

    def flags_fetch(self, index: int, row: api.MessageRow, with_uid: bool = False) -> bytes:
        parts = [b"%d FETCH (" % (index + 1)]
        if with_uid or self.qresync:
            parts.append(b"UID %d " % row.uid)
        parts.append(b"FLAGS " + self.encode_flags(row))
        if self.condstore:
            parts.append(b" MODSEQ (%d)" % row.modseq)
        parts.append(b")")
        return b"".join(parts)

    def encode_flags(self, row: api.MessageRow) -> bytes:
        recent = self.selected is not None and row.uid in self.selected.recent
        return encode_flags(row.flags, recent)

    def info(self, uid: int) -> MessageInfo:
        sel = self.sel
        key = (self.store.name, sel.name, sel.uidvalidity, uid)
        cache = self.config.info_cache
        found = cache.get(key)
        if found is None:
            # Only from the folder the session knows: entries are keyed by its UIDVALIDITY.
            source = self.store.message_sources(
                sel.name, [uid], info=True, uidvalidity=sel.uidvalidity
            ).get(uid)
            if source is None or source.info is None:
                raise api.StoreError(f"Message UID {uid} no longer exists.")
            found = source.info
            cache.put(key, found)
        return found  # type: ignore[return-value]

    def prefetch_infos(self, uids: list[int]) -> None:
        """Put the MessageInfos of `uids` that are not cached yet into the cache, with one
        store lookup for all of them (a FETCH of ENVELOPE or BODYSTRUCTURE over a folder
        would otherwise query per message)."""
        sel = self.sel
        cache = self.config.info_cache
        key = (self.store.name, sel.name, sel.uidvalidity)
        missing = [u for u in uids if cache.get((*key, u)) is None]
        if not missing:
            return
        # Only from the folder the session knows: entries are keyed by its UIDVALIDITY.
        found = self.store.message_sources(
            sel.name, missing, info=True, uidvalidity=sel.uidvalidity
        )
        for uid, (_, _, info) in found.items():
            if info is not None:
                cache.put((*key, uid), info)

    def imap_settings(self) -> ImapSettings:
        return self.config.imap_settings()


def _event_name(event: rq.Event) -> tuple[str, str | None]:
    """(command name, tag) of a reader event answered without running a command."""
    if isinstance(event, rq.NeedContinuation | rq.RawLine):
        return "", None  # part of a command still being read
    name = getattr(event, "name", None) or "?"
    return name, getattr(event, "tag", None)


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM = b" ".join(f.encode() for f in SYSTEM_FLAGS)


def flags_response(keywords: set[str]) -> bytes:
    kw = b"".join(b" " + k.encode("utf-8", "replace") for k in sorted(keywords))
    return b"FLAGS (" + _SYSTEM + kw + b")"


def permanentflags_response(keywords: set[str]) -> bytes:
    kw = b"".join(b" " + k.encode("utf-8", "replace") for k in sorted(keywords))
    return b"OK [PERMANENTFLAGS (" + _SYSTEM + kw + b" \\*)] Flags permitted"


_FLAG_CACHE: dict[tuple[frozenset[str], bool], bytes] = {}


def encode_flags(flags: frozenset[str], recent: bool) -> bytes:
    """The parenthesized flag list; cached, since mailboxes use few distinct flag sets."""
    key = (flags, recent)
    got = _FLAG_CACHE.get(key)
    if got is None:
        items = sorted(flags)
        if recent:
            items.append("\\Recent")
        got = b"(" + " ".join(items).encode("utf-8", "replace") + b")"
        if len(_FLAG_CACHE) < 4096:
            _FLAG_CACHE[key] = got
    return got


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def _tagged(tag: str | None, status: bytes, text: str, code: str | None = None) -> bytes:
    head = (tag or "*").encode("ascii", "replace") + b" " + status + b" "
    if code:
        head += b"[" + code.encode() + b"] "
    return head + _line(text) + b"\r\n"


tagged = _tagged
__all__ = [
    "ImapSession",
    "SessionConfig",
    "Login",
    "Job",
    "InfoCache",
    "Selected",
    "No",
    "Bad",
    "MAX_LITERAL_SIZE",
    "CAPABILITIES_AUTH",
    "CAPABILITIES_PREAUTH",
    "RangeSet",
    "tagged",
]
