"""MSExchangeIMAP4BE end to end: imaplib and imapclient connect as a front end would (the
hand-over of server/protocols/handover.py, then a PREAUTH session) to the service run
in-process, over the real store."""

from __future__ import annotations

import imaplib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import imapclient
import pytest

from server.backend.imap import server as imap_backend
from server.backend.imap.server import ImapBackendService
from server.directory import proxy_secret
from server.protocols.handover import HandoverRefused, ImpostorError
from server.runtime import tls
from server.settings import store as settings_store
from server.settings.models import IMAP4BE, PortPlan, default_server
from server.settings.paths import Home
from server.store import open_store
from tests.conftest import corpus_paths, wait_for
from tests.e2e.backend_support import BackendRun, running
from tests.e2e.handover_support import ProxiedIMAP4, ProxiedIMAP4SSL, hand_over

pytestmark = pytest.mark.e2e
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

MSG = (
    b"From: Alice <alice@contoso.test>\r\nTo: bob@contoso.test\r\nSubject: Lunch\r\n"
    b"Date: Tue, 3 Mar 2020 10:00:00 +0000\r\nMessage-ID: <l@contoso.test>\r\n\r\n"
    b"Shall we meet at noon?\r\n"
)


class ProxiedIMAPClient(imapclient.IMAPClient):
    def __init__(self, host: str, port: int, secret: str, mailbox: str) -> None:
        self.secret, self.mailbox = secret, mailbox
        super().__init__(host, port, ssl=False, timeout=10)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return ProxiedIMAP4(self.host, self.port, secret=self.secret, mailbox=self.mailbox)


class Raw:
    """A line-level client for exact assertions."""

    def __init__(self, port: int, secret: str | None = None, mailbox: str = "alice") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if secret is not None:
            hand_over(self.sock, secret, mailbox, "IMAP4")
        self.buf = b""

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, line: str | bytes, tag: str | None = None) -> str:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")
        tag = tag or data.split(b" ", 1)[0].decode()
        out = []
        while True:
            got = self.read_line().decode("utf-8", "replace")
            out.append(got)
            if got.startswith(tag + " "):
                return "\r\n".join(out)

    def close(self) -> None:
        self.sock.close()


class Backend(BackendRun):
    service: ImapBackendService

    def imaplib(self, mailbox: str = "alice") -> ProxiedIMAP4:
        return ProxiedIMAP4("127.0.0.1", self.port, secret=self.secret, mailbox=mailbox)

    def imapclient(self, mailbox: str = "alice") -> ProxiedIMAPClient:
        return ProxiedIMAPClient("127.0.0.1", self.port, self.secret, mailbox)

    def raw(self, mailbox: str = "alice") -> Raw:
        r = Raw(self.port, self.secret, mailbox)
        assert r.read_line().startswith(b"* PREAUTH [CAPABILITY IMAP4rev1")
        return r


def add_mailboxes(home: Home) -> None:
    with settings_store.edit(home) as doc:
        other = default_server("MBX02", "mbx02.contoso.test", PortPlan.shifted(40000))
        doc.set(("Servers", "MBX02"), other.model_dump(mode="json", exclude_defaults=True))
        for name, extra in (
            ("alice", {}),
            ("bob", {}),
            ("noimap", {"ImapEnabled": False}),
            ("faraway", {"Server": "MBX02"}),
        ):
            doc.set(
                ("Mailboxes", name),
                {"PrimarySmtpAddress": f"{name}@contoso.test", "Server": "MBX01", **extra},
            )


@pytest.fixture
def backend(home: Home, in_process: Any) -> Iterator[Backend]:
    add_mailboxes(home)
    with running(Backend, IMAP4BE, home, in_process) as backend:
        yield backend


# --- imaplib -----------------------------------------------------------------------------


def test_imaplib_folders_append_fetch_store_copy_move_expunge(backend: Backend) -> None:
    m = backend.imaplib()
    assert m.create("Projects/2024")[0] == "OK"
    assert m.rename("Projects", "Work")[0] == "OK"
    typ, listing = m.list()
    names = b"\n".join(listing)
    assert b'"Work/2024"' in names and b"\\Sent" in names
    assert m.delete("Work/2024")[0] == "OK"
    date = imaplib.Time2Internaldate(datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC))
    typ, data = m.append("INBOX", "(\\Flagged $Work)", date, MSG)
    assert typ == "OK" and re.search(rb"\[APPENDUID \d+ 1\]", data[0])
    m.append("INBOX", None, None, MSG.replace(b"Lunch", b"Dinner"))
    typ, data = m.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    typ, data = m.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
    assert b"\\Flagged" in data[0] and b"$Work" in data[0] and b" 4-May-2021" in data[0]
    assert b"RFC822.SIZE %d" % len(MSG) in data[0] and b'"Lunch"' in data[0]
    typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: Dinner\r\n\r\n"
    typ, data = m.fetch("2", "(RFC822)")
    assert data[0][1] == MSG.replace(b"Lunch", b"Dinner")
    assert b"\\Seen" in m.fetch("2", "(FLAGS)")[1][0]
    assert m.search(None, "SUBJECT", "dinner") == ("OK", [b"2"])
    assert m.search(None, "FLAGGED") == ("OK", [b"1"])
    assert m.uid("SEARCH", "BODY", "noon") == ("OK", [b"1 2"])
    typ, data = m.store("1", "+FLAGS", "(\\Answered)")
    assert b"\\Answered" in data[0]
    typ, data = m.copy("1:2", "Archive")
    assert typ == "OK"
    assert re.fullmatch(rb"\d+ 1:2 1:2", m.untagged_responses["COPYUID"][-1])
    typ, data = m.uid("MOVE", "2", "Archive")
    assert typ == "OK"
    typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = m.expunge()
    assert typ == "OK" and data[-1] == b"1"  # imaplib also keeps the MOVE's EXPUNGE
    assert backend.inbox().status("INBOX").messages == 0
    assert backend.inbox().status("Archive").messages == 3
    m.logout()


def test_imaplib_malformed_commands_get_bad_and_session_goes_on(backend: Backend) -> None:
    r = backend.raw()
    assert r.cmd("x1 FETCH").startswith("x1 BAD")
    assert "x2 BAD" in r.cmd("x2 SELECT")
    assert "x3 BAD" in r.cmd("x3 FROB nicate")
    assert "* BAD" in r.cmd("(((", tag="*")
    assert "x4 BAD" in r.cmd("x4 NOOP " + "a" * 20000)
    assert "x5 BAD" in r.cmd("x5 FETCH 1 FLAGS")  # nothing selected
    r.sock.sendall(b"x6 APPEND INBOX {999999999}\r\n")
    assert r.read_line().startswith(b"x6 NO [TOOBIG]")
    assert "x7 OK" in r.cmd("x7 NOOP")
    r.close()


def test_hand_over_refusals_and_no_login_after_it(backend: Backend) -> None:
    r = Raw(backend.port)
    assert r.read_line().startswith(b"MCHO1 CHALLENGE IMAP4 MBX01 ")
    r.sock.sendall(b"a CAPABILITY\r\nb NOOP\r\n")  # IMAP instead of the hand-over
    with pytest.raises((ConnectionError, OSError)):
        r.read_line()
    for mailbox, reason in (
        ("noimap", "disabled"),
        ("faraway", "not this one"),
        ("nobody", "no such mailbox"),
    ):
        sock = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
        with pytest.raises(HandoverRefused, match=reason):
            hand_over(sock, backend.secret, mailbox, "IMAP4")
        sock.close()
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
    with pytest.raises(ImpostorError):  # a front end with another secret trusts nothing here
        hand_over(sock, "not-the-secret", "alice", "IMAP4")
    sock.close()
    r = backend.raw()
    assert "l BAD" in r.cmd("l LOGIN alice secret")  # already authenticated
    assert "a BAD" in r.cmd("a AUTHENTICATE PLAIN AGFsaWNlAHgAeQ==")
    assert "n OK" in r.cmd("n NOOP")
    r.close()


def test_tls_port(backend: Backend) -> None:
    ctx = tls.client_context(backend.home)
    port = backend.service.bound_port(tls_port=True)
    m = ProxiedIMAP4SSL("127.0.0.1", port, ssl_context=ctx, secret=backend.secret)
    assert m.select("INBOX")[0] == "OK"
    m.logout()


# --- imapclient ---------------------------------------------------------------------------


def test_imapclient_corpus_fetch_every_item(backend: Backend) -> None:
    c = backend.imapclient()
    paths = corpus_paths()
    raws = [p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for p in paths]
    for raw in raws:
        c.append("INBOX", raw, flags=(b"\\Seen",))
    c.select_folder("INBOX")
    items = [
        b"UID",
        b"FLAGS",
        b"INTERNALDATE",
        b"RFC822.SIZE",
        b"ENVELOPE",
        b"BODYSTRUCTURE",
        b"BODY",
        b"BODY.PEEK[]",
        b"BODY.PEEK[HEADER]",
        b"BODY.PEEK[TEXT]",
        b"BODY.PEEK[1]",
        b"BODY.PEEK[1.MIME]",
        b"BODY.PEEK[]<0.10>",
        b"RFC822.HEADER",
        b"MODSEQ",
    ]
    got = c.fetch(c.search("ALL"), items)
    assert len(got) == len(raws)
    for uid, raw in zip(sorted(got), raws, strict=True):
        data = got[uid]
        assert data[b"BODY[]"] == raw
        assert data[b"RFC822.SIZE"] == len(raw)
        assert data[b"BODY[]<0>"] == raw[:10]
        assert raw.startswith(data[b"BODY[HEADER]"])
        assert data[b"ENVELOPE"] is not None and data[b"BODYSTRUCTURE"] is not None
    assert c.search(["TEXT", "the"])
    c.logout()


def test_imapclient_idle_sees_append_from_another_process(backend: Backend) -> None:
    c = backend.imapclient()
    c.select_folder("INBOX")
    c.idle()
    code = (
        "import sys; from server.settings.paths import Home; from server.store import open_store\n"
        "s = open_store(Home.resolve(sys.argv[1]), 'MBX01')\n"
        "s.mailbox('alice').append('INBOX', sys.stdin.buffer.read()); s.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(backend.home.root)],
        input=MSG,
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    responses = c.idle_check(timeout=10)
    assert (1, b"EXISTS") in responses
    c.idle_done()
    c.logout()


def test_condstore_qresync_resync_after_changes(backend: Backend) -> None:
    box = backend.inbox()
    for _ in range(3):
        box.append("INBOX", MSG)
    r = backend.raw()
    assert "ENABLED QRESYNC" in r.cmd("e ENABLE QRESYNC")
    out = r.cmd("s SELECT INBOX")
    modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", out).group(1))
    validity = int(re.search(r"UIDVALIDITY (\d+)", out).group(1))
    r.cmd("u UNSELECT")
    box.set_flags("INBOX", [2], "+", ["\\Flagged"])
    box.set_flags("INBOX", [3], "+", ["\\Deleted"])
    box.expunge("INBOX")
    out = r.cmd(f"s SELECT INBOX (QRESYNC ({validity} {modseq} 1:3))")
    assert "* VANISHED (EARLIER) 3" in out
    assert re.search(r"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", out)
    out = r.cmd(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert "UID 2" in out and "UID 1 " not in out
    r.close()


def test_idle_in_raw_gets_expunge_and_flags_from_another_session(backend: Backend) -> None:
    box = backend.inbox()
    box.append("INBOX", MSG)
    box.append("INBOX", MSG)
    r = backend.raw()
    r.cmd("s SELECT INBOX")
    r.sock.sendall(b"i IDLE\r\n")
    assert r.read_line() == b"+ idling"
    other = backend.imaplib()
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    while (line := r.read_line()).startswith(b"* 1 FETCH"):
        assert b"\\Deleted" in line
    assert line == b"* 1 EXPUNGE"
    other.store("1", "+FLAGS", "(\\Flagged)")
    assert r.read_line().startswith(b"* 1 FETCH (FLAGS (\\Flagged")
    r.sock.sendall(b"DONE\r\n")
    assert r.read_line() == b"i OK IDLE terminated"
    other.logout()
    r.close()


def test_autologout_after_authenticated_timeout(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imap_backend._Connection, "_timeout", lambda self: 0.3)
    r = backend.raw()
    assert r.read_line() == b"* BYE Autologout; idle for too long"
    with pytest.raises((ConnectionError, OSError)):
        r.read_line()


def test_preauth_greeting_and_stop_says_bye(backend: Backend, home: Home, in_process: Any) -> None:
    r = Raw(backend.port, backend.secret)
    assert r.read_line().endswith(b"] Logged in as alice")
    assert backend.service.status()["connections"] == 1
    backend.run.call(backend.service.stop(2.0))
    assert r.read_line() == b"* BYE Server shutting down"
    backend.run.service = None  # already stopped


# --- crash safety ---------------------------------------------------------------------------

LAUNCHER = """
import asyncio, sys
from server.backend.imap.server import ImapBackendService
from server.runtime.service import ServiceContext
from server.settings import store
from server.settings.paths import Home

async def main():
    home = Home.resolve(sys.argv[1])
    snap = store.load(home)
    service = ImapBackendService(ServiceContext("MSExchangeIMAP4BE", "MBX01", home, snap.settings))
    await service.start()
    print("READY", service.bound_port(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _launch(home: Home) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(home.root)], stdout=subprocess.PIPE, cwd=REPO_ROOT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == [b"READY"], line
    return proc, int(line[1])


def test_kill_during_burst_keeps_every_acknowledged_change(home: Home) -> None:
    add_mailboxes(home)
    secret = proxy_secret(home)
    proc, port = _launch(home)
    acked_appends: list[int] = []
    acked_flags: dict[int, str] = {}
    try:
        r = Raw(port, secret)
        r.read_line()
        r.cmd("s SELECT INBOX")
        deadline = time.monotonic() + 0.8
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = MSG + b"n=%d\r\n" % n
            r.sock.sendall(b"a%d APPEND INBOX {%d+}\r\n%s\r\n" % (n, len(body), body))
            while True:
                line = r.read_line().decode()
                if line.startswith(f"a{n} "):
                    break
            uid = int(re.search(r"APPENDUID \d+ (\d+)", line).group(1))
            acked_appends.append(uid)
            out = r.cmd(f"f{n} UID STORE {uid} +FLAGS.SILENT (\\Flagged)")
            if f"f{n} OK" in out:
                acked_flags[uid] = "\\Flagged"
        # Fire more without waiting, then kill in the middle of them.
        for k in range(20):
            body = MSG + b"burst=%d\r\n" % k
            r.sock.sendall(b"b%d APPEND INBOX {%d+}\r\n%s\r\n" % (k, len(body), body))
            r.sock.sendall(b"c%d STORE 1:* +FLAGS.SILENT (\\Seen)\r\n" % k)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert acked_appends
    proc, port = _launch(home)
    try:
        store = open_store(home, "MBX01")
        try:
            rows = {row.uid: row for row in store.mailbox("alice").snapshot("INBOX").rows}
            for uid in acked_appends:
                assert uid in rows
            for uid, flag in acked_flags.items():
                assert flag in rows[uid].flags
            assert store.check() == []
        finally:
            store.close()
        r = Raw(port, secret)
        r.read_line()
        assert "s OK" in r.cmd("s SELECT INBOX")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_idle_keepalive(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_backend, "KEEPALIVE_SECONDS", 0.2)
    r = backend.raw()
    r.cmd("s SELECT INBOX")
    r.sock.sendall(b"i IDLE\r\n")
    assert r.read_line() == b"+ idling"
    assert r.read_line() == b"* OK Still here"
    assert r.read_line() == b"* OK Still here"
    r.sock.sendall(b"DONE\r\n")
    assert r.read_line() == b"i OK IDLE terminated"
    r.close()


# --- read-only commands on the event loop -----------------------------------------------


class CountingExecutor:
    """The service's worker pool, counting what is handed to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.jobs = 0

    def submit(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self.jobs += 1
        return self.inner.submit(fn, *args, **kw)

    def shutdown(self, *args: Any, **kw: Any) -> None:
        self.inner.shutdown(*args, **kw)


def test_read_only_fetch_runs_in_place_until_one_is_slow(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.inbox().append("INBOX", MSG)
    pool = CountingExecutor(backend.service.executor)
    monkeypatch.setattr(backend.service, "executor", pool)
    r = backend.raw()
    assert " OK " in r.cmd("s SELECT INBOX")
    handed = pool.jobs
    assert "Subject: Lunch" in r.cmd("f FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "b OK" in r.cmd("b FETCH 1 BODY.PEEK[]")
    assert pool.jobs == handed  # both ran on the event loop
    monkeypatch.setattr(imap_backend, "INLINE_SLOW", 0.0)
    assert "x OK" in r.cmd("x FETCH 1 FLAGS")  # in place, "slow": the next ones are not
    assert pool.jobs == handed
    assert "y OK" in r.cmd("y FETCH 1 FLAGS")
    assert pool.jobs == handed + 1
    r.close()


# --- IDLE fan-out: one store read shared by the sessions of a mailbox ----------------------


def test_many_idle_sessions_each_see_every_delivery_in_order(backend: Backend) -> None:
    """Sessions sharing one changes_since() answer per notification must never take an
    answer older than their own wake-up: with deliveries back to back, every session sees
    EXISTS climb to the final count, and exactly one session gets the new mail \\Recent."""
    box = backend.inbox()
    box.append("INBOX", MSG)
    sessions = []
    for n in range(12):
        r = backend.raw()
        r.cmd(f"s{n} SELECT INBOX")
        r.sock.sendall(b"i IDLE\r\n")
        assert r.read_line() == b"+ idling"
        sessions.append(r)
    for _ in range(3):
        box.append("INBOX", MSG)
    recent_seen = 0
    for r in sessions:
        exists = 1
        while exists < 4:
            line = r.read_line()
            if line.endswith(b" EXISTS"):
                count = int(line.split()[1])
                assert count > exists, line
                exists = count
            elif line.endswith(b" RECENT"):
                recent_seen += int(line.split()[1]) > 0
        r.sock.sendall(b"DONE\r\n")
        while (line := r.read_line()) != b"i OK IDLE terminated":
            if line.endswith(b" RECENT"):
                recent_seen += int(line.split()[1]) > 0
        r.close()
    assert recent_seen >= 1


def test_idle_sessions_are_pushed_past_one_that_went_away(backend: Backend) -> None:
    """The sessions one delivery wakes are pushed from one task: a client that went away
    must not cost the others their EXISTS, and leaves the mailbox's wake-ups with it."""
    box = backend.inbox()
    box.append("INBOX", MSG)
    sessions = []
    for n in range(4):
        r = backend.raw()
        r.cmd(f"s{n} SELECT INBOX")
        r.sock.sendall(b"i IDLE\r\n")
        assert r.read_line() == b"+ idling"
        sessions.append(r)
    wakeups = backend.service.wakeups
    wait_for(lambda: wakeups.members(box.name) == 4)
    sessions.pop(1).close()
    box.append("INBOX", MSG)
    for r in sessions:
        while not r.read_line().endswith(b" EXISTS"):
            pass
    wait_for(lambda: wakeups.members(box.name) == 3)
    for r in sessions:
        r.close()
    wait_for(lambda: wakeups.members(box.name) == 0)


def test_wake_up_while_a_push_holds_the_connection_is_pushed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery announced while an IDLE push still holds the connection (its worker
    thread done with the store, the push not yet finished) finds the lock taken and starts
    no push of its own: the running push must take it on, or the client never hears of it.
    The ordering is forced: the push's worker delivers and waits for the event loop to
    mark the session dirty before it returns."""
    from server.backend.imap.session import ImapSession

    box = backend.inbox()
    box.append("INBOX", MSG)
    push_changes = ImapSession.push_changes
    injected: list[bool] = []

    def push_then_deliver(self: ImapSession, changes: Any) -> bytes:
        out = push_changes(self, changes)
        if not injected:
            injected.append(not self.dirty)
            box.append("INBOX", MSG)
            wait_for(lambda: self.dirty)  # the loop took the wake-up, lock still held
        return out

    monkeypatch.setattr(ImapSession, "push_changes", push_then_deliver)
    r = backend.raw()
    r.cmd("s SELECT INBOX")
    r.sock.sendall(b"i IDLE\r\n")
    assert r.read_line() == b"+ idling"
    box.append("INBOX", MSG)
    seen = []
    while not seen or seen[-1] < 3:
        line = r.read_line()
        if line.endswith(b" EXISTS"):
            seen.append(int(line.split()[1]))
    assert seen == [2, 3] and injected == [True]
    r.sock.sendall(b"DONE\r\n")
    while r.read_line() != b"i OK IDLE terminated":
        pass
    r.close()
