"""Model-based test of the IMAP session core over the real SQLite store: random sequences of
APPEND, COPY, MOVE, STORE, EXPUNGE, DELETE, CREATE, RENAME, reconnects and back-end restarts,
and after every step every FETCH item and SEARCH answer of the selected folder is compared
with a plain model built from the appended bytes alone.

The expected ENVELOPE, BODYSTRUCTURE and sections come from the project's MIME code applied
to each message's bytes on their own (and, for a converting MessageRetrievalMimeFormat, to
the rendering of those bytes), never from the store, so a cache keyed on an identity that
comes back after a delete (issue 12) shows up as a mismatch."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from server.backend.imap.commands import TABLE
from server.backend.imap.session import ImapSession, InfoCache, Login, SessionConfig
from server.protocols.imap import bodystructure
from server.retrieval import CACHE
from server.retrieval.render import convert
from server.settings.models import Mailbox, default_settings
from server.settings.types import MimeTextFormat
from server.store import db
from server.store.db import SqliteMailStore

# --- the messages: distinct shapes and sizes, each with its own search tokens -------------


def _plain(i: int, extra: bytes = b"", body: bytes = b"") -> bytes:
    return (
        b"From: Sender %d <s%d@h%d.org>\r\nTo: r%d@x.org\r\nSubject: subj%d hello\r\n"
        % (i, i, i, i, i)
        + extra
        + b"\r\nbodytoken%d common\r\n" % i
        + body
    )


_ATTACH = base64.encodebytes(bytes(range(256)) * 3).replace(b"\n", b"\r\n")
MESSAGES = [
    _plain(0),
    _plain(
        1,
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <m1@h1.org>\r\n"
        b"X-Long: " + b"x" * 300 + b"\r\n",
        b"line of text\r\n" * 150,
    ),
    _plain(
        2,
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b2"\r\n',
        b"--b2\r\nContent-Type: text/plain\r\n\r\nplain bodytoken2 common\r\n--b2\r\n"
        b"Content-Type: text/html\r\n\r\n<p>html part</p>\r\n--b2--\r\n",
    ),
    _plain(
        3,
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b3"\r\n',
        b"--b3\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee bodytoken3 common\r\n"
        b'--b3\r\nContent-Type: application/octet-stream; name="a.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + _ATTACH + b"--b3--\r\n",
    ),
    _plain(
        4,
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b4"\r\n',
        b"--b4\r\nContent-Type: text/plain\r\n\r\nforwarded bodytoken4 common\r\n--b4\r\n"
        b"Content-Type: message/rfc822\r\n\r\nFrom: inner@in.org\r\nSubject: inner\r\n\r\n"
        b"inner body\r\n--b4--\r\n",
    ),
    b"From: s5@h5.org\r\nTo: r5@x.org\r\n\r\nbodytoken5 common\r\n",
]
FOLDERS = ["INBOX", "f1", "f2", "f3"]
FLAGS = ["\\Seen", "\\Deleted", "\\Flagged", "Work"]
SECRET = "s3cret"
FETCH_ITEMS = "ENVELOPE BODYSTRUCTURE BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[HEADER] RFC822.SIZE"


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def expected_items(raw: bytes, fmt: MimeTextFormat | None) -> bytes:
    """What FETCH FETCH_ITEMS gives for `raw`, from the MIME code alone."""
    data = convert(raw, fmt) if fmt is not None else raw
    info = bodystructure.analyze(data)
    return (
        b"ENVELOPE "
        + info.envelope
        + b" BODYSTRUCTURE "
        + info.bodystructure
        + b" BODY[] "
        + _literal(data)
        + b" BODY[TEXT] "
        + _literal(data[info.header_len :])
        + b" BODY[HEADER] "
        + _literal(data[: info.header_len])
        # EnableExactRFC822Size $false (the default): the stored size, an estimate of
        # the rendering's that is the same in every session (server/retrieval/view.py).
        + b" RFC822.SIZE %d" % len(raw)
    )


# --- the model ------------------------------------------------------------------------------


@dataclass
class Msg:
    index: int  # into MESSAGES
    flags: frozenset[str]
    modseq: int


@dataclass
class Folder:
    uidnext: int = 1
    modseq: int = 1
    msgs: dict[int, Msg] = field(default_factory=dict)

    def add(self, index: int, flags: frozenset[str]) -> int:
        self.modseq += 1
        uid = self.uidnext
        self.msgs[uid] = Msg(index, flags, self.modseq)
        self.uidnext += 1
        return uid


def _without_fsync() -> Callable[[], None]:
    """Durability is not what this test is about (test_store_crash is), and fsync per
    commit makes up most of its time: the store's fsyncs become no-ops until undone."""
    real_open, real_fsync = db._Pool._open, os.fsync

    def fast_open(pool: db._Pool) -> sqlite3.Connection:
        conn = real_open(pool)
        conn.execute("PRAGMA synchronous=OFF")
        return conn

    db._Pool._open = fast_open  # type: ignore[method-assign]
    os.fsync = lambda fd: None

    def undo() -> None:
        db._Pool._open = real_open  # type: ignore[method-assign]
        os.fsync = real_fsync

    return undo


# --- driving the session core ----------------------------------------------------------------


class Connection:
    def __init__(self, store: SqliteMailStore, config: SessionConfig) -> None:
        self.session = ImapSession(config, TABLE)
        self.session.greeting()
        token = base64.b64encode(b"alice\0mailctl-proxy\0" + SECRET.encode()).decode()
        assert "a OK" in self(f"a AUTHENTICATE PLAIN {token}")

    def send(self, data: bytes) -> bytes:
        self.session.receive(data)
        out = []
        while (job := self.session.next_job()) is not None:
            out.append(job.run())
        # What the I/O layer does when the store announces a commit (this session's own
        # included): the next command takes the changes in.
        self.session.mark_dirty()
        return b"".join(out)

    def __call__(self, line: str) -> str:
        return self.send(line.encode() + b"\r\n").decode("utf-8", "replace")


class StoreMachine(RuleBasedStateMachine):
    fmt: MimeTextFormat | None = None  # a converting retrieval format, or as stored

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="storemodel-")
        self.folders: dict[str, Folder] = {"INBOX": Folder()}
        for name in ("Sent Items", "Drafts", "Deleted Items", "Junk Email", "Archive"):
            self.folders[name] = Folder()
        self.selected: str | None = None
        self.settings = default_settings()
        if self.fmt is not None:
            self.settings.server("MBX01").ImapSettings.MessageRetrievalMimeFormat = self.fmt
        self.settings.Mailboxes["alice"] = Mailbox(
            PrimarySmtpAddress="alice@contoso.test", Server="MBX01"
        )
        # Renderings are cached per process by (mailbox, folder, UIDVALIDITY, UID): a new
        # store in another folder starts its UIDVALIDITYs from the clock again.
        CACHE.clear()
        self._undo = _without_fsync()
        self.store: SqliteMailStore | None = None
        self.conn: Connection | None = None
        # A second session of the same process with a folder selected, which the first
        # one changes, deletes or renames under it: (connection, name, model folder).
        self.watcher: tuple[Connection, str, Folder] | None = None
        self._start()

    # --- the back end -----------------------------------------------------------------------
    def _start(self) -> None:
        self.store = SqliteMailStore(Path(self.tmp.name) / "db")
        self.info_cache = InfoCache()
        self._connect()

    def _connect(self) -> None:
        store = self.store
        assert store is not None

        def auth(authzid: str, authcid: str, password: str) -> Login | str:
            if authcid != "mailctl-proxy" or password != SECRET:
                return "Authentication failed"
            return Login(authzid, store.mailbox(authzid))

        self.config = SessionConfig(
            lambda: self.settings, "MBX01", auth, info_cache=self.info_cache
        )
        self.conn = Connection(store, self.config)
        if self.selected is not None:
            self._select(self.selected)

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        self.tmp.cleanup()
        self._undo()

    def _select(self, name: str) -> None:
        assert self.conn is not None
        out = self.conn(f's SELECT "{name}"')
        assert "s OK" in out, out
        self.selected = name

    def _ok(self, line: str) -> str:
        assert self.conn is not None
        out = self.conn(line)
        tag = line.split(" ", 1)[0]
        assert f"\r\n{tag} OK" in "\r\n" + out, (line, out)
        return out

    # --- rules ------------------------------------------------------------------------------
    @initialize(first=st.integers(0, len(MESSAGES) - 1), second=st.integers(0, len(MESSAGES) - 1))
    def start(self, first: int, second: int) -> None:
        self._select("INBOX")
        self.append("INBOX", first, False)
        self.append("INBOX", second, True)

    @rule(
        folder=st.sampled_from(FOLDERS), index=st.integers(0, len(MESSAGES) - 1), seen=st.booleans()
    )
    def append(self, folder: str, index: int, seen: bool) -> None:
        raw = MESSAGES[index]
        flags = "(\\Seen) " if seen else ""
        assert self.conn is not None
        out = self.conn.send(
            b'a APPEND "%s" %s{%d+}\r\n%s\r\n' % (folder.encode(), flags.encode(), len(raw), raw)
        ).decode()
        if folder not in self.folders:
            assert "a NO" in out, out
            return
        assert "a OK" in out, out
        self.folders[folder].add(index, frozenset({"\\Seen"} if seen else ()))

    @rule(folder=st.sampled_from(FOLDERS[1:]))
    def create(self, folder: str) -> None:
        assert self.conn is not None
        out = self.conn(f"c CREATE {folder}")
        if folder in self.folders:
            assert "c NO" in out, out
            return
        assert "c OK" in out, out
        self.folders[folder] = Folder()

    @rule(folder=st.sampled_from(FOLDERS[1:]))
    def delete(self, folder: str) -> None:
        assert self.conn is not None
        out = self.conn(f"d DELETE {folder}")
        if folder not in self.folders:
            assert "d NO" in out, out
            return
        assert "d OK" in out, out
        del self.folders[folder]
        if self.selected == folder:
            self.selected = None

    @rule(old=st.sampled_from(FOLDERS), new=st.sampled_from(FOLDERS[1:]))
    def rename(self, old: str, new: str) -> None:
        assert self.conn is not None
        out = self.conn(f"r RENAME {old} {new}")
        if old not in self.folders or new in self.folders:
            assert "r NO" in out, out
            return
        assert "r OK" in out, out
        if old == "INBOX":  # RFC 3501 6.3.5: the messages move, INBOX stays, empty
            inbox = self.folders["INBOX"]
            inbox.modseq += 1
            moved = Folder(inbox.uidnext, inbox.modseq)
            for uid, m in inbox.msgs.items():
                moved.msgs[uid] = Msg(m.index, m.flags, inbox.modseq)
            inbox.msgs = {}
            self.folders[new] = moved
        else:
            self.folders[new] = self.folders.pop(old)
            if self.selected == old:
                self.selected = new

    @rule(folder=st.sampled_from(FOLDERS))
    def select(self, folder: str) -> None:
        assert self.conn is not None
        out = self.conn(f's SELECT "{folder}"')
        if folder not in self.folders:
            assert "s NO" in out, out
            self.selected = None  # a failed SELECT leaves no folder selected
            return
        assert "s OK" in out, out
        self.selected = folder

    def _pick(self, n: int) -> int | None:
        assert self.selected is not None
        uids = sorted(self.folders[self.selected].msgs)
        return uids[n % len(uids)] if uids else None

    @precondition(lambda self: self.selected is not None)
    @rule(n=st.integers(0, 50), op=st.sampled_from("+-"), flag=st.sampled_from(FLAGS))
    def store_flags(self, n: int, op: str, flag: str) -> None:
        uid = self._pick(n)
        if uid is None:
            return
        self._ok(f"f UID STORE {uid} {op}FLAGS.SILENT ({flag})")
        assert self.selected is not None
        folder = self.folders[self.selected]
        m = folder.msgs[uid]
        new = m.flags | {flag} if op == "+" else m.flags - {flag}
        if new != m.flags:
            folder.modseq += 1
            folder.msgs[uid] = Msg(m.index, frozenset(new), folder.modseq)

    @precondition(lambda self: self.selected is not None)
    @rule()
    def expunge(self) -> None:
        self._ok("e EXPUNGE")
        assert self.selected is not None
        folder = self.folders[self.selected]
        gone = [u for u, m in folder.msgs.items() if "\\Deleted" in m.flags]
        if gone:
            folder.modseq += 1
            for uid in gone:
                del folder.msgs[uid]

    @precondition(lambda self: self.selected is not None)
    @rule(n=st.integers(0, 50))
    def expunge_one(self, n: int) -> None:
        """UID EXPUNGE (RFC 4315) of one message, \\Deleted first."""
        uid = self._pick(n)
        if uid is None:
            return
        self.store_flags(n, "+", "\\Deleted")
        self._ok(f"x UID EXPUNGE {uid}")
        assert self.selected is not None
        folder = self.folders[self.selected]
        folder.modseq += 1
        del folder.msgs[uid]

    @precondition(lambda self: self.selected is not None)
    @rule(n=st.integers(0, 50), dest=st.sampled_from(FOLDERS), move=st.booleans())
    def copy(self, n: int, dest: str, move: bool) -> None:
        uid = self._pick(n)
        assert self.selected is not None and self.conn is not None
        if uid is None or dest == self.selected:
            return
        verb = "MOVE" if move else "COPY"
        out = self.conn(f'm UID {verb} {uid} "{dest}"')
        if dest not in self.folders:
            assert "m NO" in out, out
            return
        assert "m OK" in out, out
        src = self.folders[self.selected]
        m = src.msgs[uid]
        self.folders[dest].add(m.index, m.flags)
        if move:
            src.modseq += 1
            del src.msgs[uid]

    @rule(process=st.booleans())
    def restart(self, process: bool) -> None:
        """A new session in the same back-end process (its caches kept), or the back end
        stopped and started again (store and caches reopened from disk)."""
        if process:
            assert self.store is not None
            self.store.close()
            self.watcher = None
            self._start()
        else:
            self._connect()

    @rule(folder=st.sampled_from(FOLDERS))
    def watch(self, folder: str) -> None:
        """Another session selects `folder` and stays there."""
        if folder not in self.folders:
            return
        assert self.store is not None
        conn = Connection(self.store, self.config)
        out = conn(f's SELECT "{folder}"')
        assert "s OK" in out, out
        self.watcher = (conn, folder, self.folders[folder])

    # --- the comparison -------------------------------------------------------------------
    @invariant()
    def selected_folder_matches_the_model(self) -> None:
        if self.selected is None or self.conn is None:
            return
        self._compare(self.conn, self.folders[self.selected], self.selected)

    @invariant()
    def watcher_sees_its_folder_or_says_bye(self) -> None:
        """The watcher's folder is the one it selected while the model holds that very
        folder under that name (renaming INBOX empties it but keeps it); otherwise the
        session must end with BYE rather than show another folder's messages."""
        if self.watcher is None:
            return
        conn, name, folder = self.watcher
        if self.folders.get(name) is not folder:
            out = conn("n NOOP")
            assert out.startswith("* BYE ") or "\r\n* BYE " in out, out
            assert conn.session.closed
            self.watcher = None
            return
        self._compare(conn, folder, name)

    def _compare(self, conn: Connection, folder: Folder, name: str) -> None:
        uids = sorted(folder.msgs)
        assert "n OK" in conn("n NOOP")  # expunges are reported here, not in FETCH
        out = conn.send(b"x UID FETCH 1:* (" + FETCH_ITEMS.encode() + b")\r\n")
        assert out.endswith(b"x OK FETCH completed\r\n") or b"x OK" in out, out
        for seq, uid in enumerate(uids, 1):
            want = (
                b"* %d FETCH (UID %d " % (seq, uid)
                + expected_items(MESSAGES[folder.msgs[uid].index], self.fmt)
                + b")\r\n"
            )
            assert want in out, (name, uid, folder.msgs[uid].index, out[:3000])
        assert out.count(b" FETCH (UID ") == len(uids), out[:3000]
        flags_out = conn("y UID FETCH 1:* (FLAGS MODSEQ)")
        got = {
            int(m[1]): (frozenset(m[2].split()) - {"\\Recent"}, int(m[3]))
            for m in re.finditer(
                r"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)", flags_out
            )
        }
        assert got == {u: (m.flags, m.modseq) for u, m in folder.msgs.items()}, flags_out
        self._check_search(conn, folder)

    def _check_search(self, conn: Connection, folder: Folder) -> None:
        msgs = folder.msgs

        def hits(key: str) -> list[int]:
            out = conn(f"q UID SEARCH {key}")
            found = re.search(r"\* SEARCH([ \d]*)\r\n", out)
            assert found, (key, out)
            return sorted(int(u) for u in found[1].split())

        def where(test) -> list[int]:  # noqa: ANN001
            return sorted(u for u, m in msgs.items() if test(m))

        assert hits("ALL") == sorted(msgs)
        assert hits("DELETED") == where(lambda m: "\\Deleted" in m.flags)
        assert hits("UNSEEN") == where(lambda m: "\\Seen" not in m.flags)
        assert hits("BODY common") == sorted(msgs)
        present = sorted({m.index for m in msgs.values()})
        # One message kind present (and one absent) per step: the steps vary them.
        absent = [i for i in range(len(MESSAGES)) if i not in present]
        for i in present[len(msgs) % len(present) :][:1] + absent[:1] if present else [0]:
            same = where(lambda m, i=i: m.index == i)
            assert hits(f"FROM s{i}@h{i}") == same, i
            assert hits(f"TO r{i}@x.org") == same, i
            assert hits(f"BODY bodytoken{i}") == same, i
            assert hits(f"SUBJECT subj{i}") == (same if i != 5 else []), i


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class StoredFormat(StoreMachine):
    pass


class ConvertedFormat(StoreMachine):
    fmt = MimeTextFormat.HtmlOnly


StoredFormat.TestCase.settings = MODEL_SETTINGS
ConvertedFormat.TestCase.settings = settings(MODEL_SETTINGS, max_examples=25)
TestStoredFormat = StoredFormat.TestCase
TestConvertedFormat = ConvertedFormat.TestCase
