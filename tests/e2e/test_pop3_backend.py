"""MSExchangePOP3BE end to end: Python's poplib, as a front end would connect (the hand-over
of server/protocols/handover.py, then POP3 in the TRANSACTION state), against the service run
in-process."""

from __future__ import annotations

import poplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.backend.pop3.server import Pop3BackendService, _Connection
from server.protocols.handover import HandoverRefused
from server.runtime import tls
from server.settings import store as settings_store
from server.settings.models import POP3BE
from server.settings.paths import Home
from server.store import NewMessage
from tests.conftest import wait_for
from tests.e2e import handover_support
from tests.e2e.backend_support import BackendRun, running
from tests.e2e.handover_support import hand_over

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]


def message(n: int, body: bytes = b"") -> bytes:
    return (
        b"From: sender@contoso.test\r\nTo: alice@contoso.test\r\n"
        b"Subject: message %d\r\nMessage-ID: <m%d@contoso.test>\r\n\r\n"
        % (n, n)
        + (body or b"Hello %d\r\n.a line starting with a dot\r\n..two\r\nlast\r\n" % n)
    )


class ProxiedPOP3(handover_support.ProxiedPOP3):
    def body(self, which: int) -> bytes:
        _, lines, _ = self.retr(which)
        return b"".join(line + b"\r\n" for line in lines)


class Backend(BackendRun):
    service: Pop3BackendService

    def login(self, mailbox: str = "alice") -> ProxiedPOP3:
        return ProxiedPOP3("127.0.0.1", self.port, secret=self.secret, mailbox=mailbox)

    def refusal(self, mailbox: str) -> str:
        """The hand-over's refusal text for `mailbox`."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            with pytest.raises(HandoverRefused) as refused:
                hand_over(sock, self.secret, mailbox, "POP3")
        return refused.value.text

    def deliver(self, *raws: bytes, mailbox: str = "alice") -> list[int]:
        box = self.inbox(mailbox)
        return [box.append("INBOX", raw).uid for raw in raws]

    def uids(self, mailbox: str = "alice") -> list[int]:
        return [row.uid for row in self.inbox(mailbox).snapshot("INBOX").rows]

    def connections(self) -> int:
        return self.run.call(_status(self.service))["connections"]


async def _status(service: Pop3BackendService) -> dict[str, Any]:
    return service.status()


def drop(pop: poplib.POP3) -> None:
    pop.file.close()
    pop.sock.close()


def add_mailboxes(home: Home) -> None:
    with settings_store.edit(home) as doc:
        for name, extra in (("alice", {}), ("bob", {}), ("nopop", {"PopEnabled": False})):
            doc.set(
                ("Mailboxes", name),
                {"PrimarySmtpAddress": f"{name}@contoso.test", "Server": "MBX01", **extra},
            )


@pytest.fixture
def backend(home: Home, in_process: Any) -> Iterator[Backend]:
    """The service on the real store; the test delivers and checks through its own store
    handle, as delivery and the IMAP back end would."""
    add_mailboxes(home)
    with running(Backend, POP3BE, home, in_process) as backend:
        yield backend


# --- the classic cycles --------------------------------------------------------------------
def test_download_and_delete_cycle(backend: Backend) -> None:
    raws = [message(1), message(2), message(3)]
    backend.deliver(*raws)
    pop = backend.login()
    count, octets = pop.stat()
    assert (count, octets) == (3, sum(map(len, raws)))
    _, listing, _ = pop.list()
    assert listing == [b"%d %d" % (i, len(r)) for i, r in enumerate(raws, 1)]
    for number, raw in enumerate(raws, 1):
        assert pop.body(number) == raw
        pop.dele(number)
    assert pop.stat() == (0, 0)
    assert pop.quit().startswith(b"+OK")
    assert backend.uids() == []
    pop = backend.login()
    assert pop.stat() == (0, 0)
    pop.quit()


def test_leave_on_server_three_sessions_with_uidl(backend: Backend) -> None:
    backend.deliver(message(1), message(2))
    pop = backend.login()
    _, first, _ = pop.uidl()
    ids = {line.split()[1] for line in first}
    assert len(ids) == 2
    for number in (1, 2):
        pop.retr(number)
    pop.quit()

    new_uid = backend.deliver(message(3))[0]
    pop = backend.login()
    _, second, _ = pop.uidl()
    assert [line.split()[1] for line in second[:2]] == [line.split()[1] for line in first]
    new = [line for line in second if line.split()[1] not in ids]
    assert len(new) == 1
    assert pop.body(int(new[0].split()[0])) == message(3)
    pop.quit()

    pop = backend.login()
    _, third, _ = pop.uidl()
    assert third == second
    pop.dele(1)
    pop.quit()
    assert backend.uids()[-1] == new_uid and len(backend.uids()) == 2


def test_top_with_zero_and_n_lines(backend: Backend) -> None:
    raw = message(1, b"l1\r\n.l2\r\nl3\r\n")
    backend.deliver(raw)
    pop = backend.login()
    _, lines, _ = pop.top(1, 0)
    header = raw.split(b"\r\n\r\n")[0]
    assert lines == header.split(b"\r\n") + [b""]
    _, lines, _ = pop.top(1, 2)
    assert lines[-3:] == [b"", b"l1", b".l2"]
    pop.quit()


def test_dropped_connection_deletes_nothing(backend: Backend) -> None:
    uids = backend.deliver(message(1), message(2))
    pop = backend.login()
    pop.dele(1)
    pop.dele(2)
    drop(pop)  # no QUIT
    wait_for(lambda: backend.connections() == 0)
    assert backend.uids() == uids
    pop = backend.login()  # and the maildrop lock is free again
    assert pop.stat()[0] == 2
    pop.quit()


def test_message_expunged_by_another_session_gets_err(backend: Backend) -> None:
    uids = backend.deliver(message(1), message(2))
    pop = backend.login()
    assert pop.stat()[0] == 2
    box = backend.inbox()
    box.set_flags("INBOX", [uids[0]], "+", ["\\Deleted"])
    box.expunge("INBOX")  # as an IMAP client would, while the POP3 session is open
    with pytest.raises(poplib.error_proto) as err:
        pop.retr(1)
    assert b"no longer available" in err.value.args[0]
    assert pop.body(2) == message(2)  # the session goes on
    pop.quit()
    assert backend.uids() == [uids[1]]


def test_descending_order_numbers_the_newest_first(backend: Backend) -> None:
    uids = backend.deliver(message(1), message(2), message(3))
    backend.edit(
        lambda doc: doc.set(
            ("Servers", "MBX01", "PopSettings", "MessageRetrievalSortOrder"), "Descending"
        )
    )
    pop = backend.login()
    assert pop.body(1) == message(3)
    assert pop.body(3) == message(1)
    pop.dele(1)
    pop.quit()
    assert backend.uids() == uids[:2]


def test_second_session_gets_in_use(backend: Backend) -> None:
    backend.deliver(message(1))
    first = backend.login()
    assert backend.refusal("alice").startswith("-ERR [IN-USE]")
    second = backend.login("bob")  # other mailboxes are free
    second.quit()
    first.quit()


def test_too_long_command_gets_err_and_the_session_goes_on(backend: Backend) -> None:
    pop = backend.login()
    with pytest.raises(poplib.error_proto, match="too long"):
        pop._shortcmd("NOOP " + "x" * 600)
    assert pop.noop().startswith(b"+OK")
    backend.edit(lambda doc: doc.set(("Servers", "MBX01", "PopSettings", "MaxCommandSize"), 40))
    with pytest.raises(poplib.error_proto, match="at most 40"):
        pop._shortcmd("NOOP " + "x" * 50)
    pop.quit()


def test_estimated_and_exact_sizes(backend: Backend) -> None:
    bare_lf = b"Subject: lf\n\n.one\ntwo\n"  # stored as given by a careless importer
    backend.deliver(message(1), bare_lf)
    exact = len(bare_lf.replace(b"\n", b"\r\n"))
    pop = backend.login()
    assert pop.list(2).split()[2] == b"%d" % len(bare_lf)  # the estimate: the stored size
    response, lines, _ = pop.retr(2)
    assert response == b"+OK %d octets" % exact and lines == [b"Subject: lf", b"", b".one", b"two"]
    pop.quit()
    backend.edit(
        lambda doc: doc.set(("Servers", "MBX01", "PopSettings", "EnableExactRFC822Size"), True)
    )
    pop = backend.login()
    assert pop.list(2).split()[2] == b"%d" % exact
    assert pop.list(1).split()[2] == b"%d" % len(message(1))  # CRLF messages: the same
    pop.quit()


# --- who may connect -----------------------------------------------------------------------
def test_connection_without_the_hand_over_is_closed(backend: Backend) -> None:
    with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as sock:
        assert handover_support.read_line(sock).startswith(b"MCHO1 CHALLENGE POP3 MBX01 ")
        sock.sendall(b"USER alice\r\nPASS secret\r\n")
        assert sock.recv(100) == b""


def test_hand_over_refusals_and_no_login_after_it(backend: Backend) -> None:
    assert backend.refusal("nopop").startswith("-ERR [AUTH]") and "disabled" in backend.refusal(
        "nopop"
    )
    assert backend.refusal("nobody").startswith("-ERR [AUTH]")
    pop = backend.login()
    assert pop.getwelcome() == b"+OK alice has 0 messages (0 octets)"
    with pytest.raises(poplib.error_proto):
        pop.user("alice")
    with pytest.raises(poplib.error_proto):
        pop._shortcmd("AUTH PLAIN AGFsaWNlAHgAeQ==")
    caps = pop.capa()
    assert "STLS" not in caps and caps["IMPLEMENTATION"] == ["mailctl"]
    pop.quit()


def test_implicit_tls_port(backend: Backend) -> None:
    backend.deliver(message(1))
    context = tls.client_context(backend.home)
    port = backend.service.bound_port(tls_port=True)
    pop = ProxiedPOP3("127.0.0.1", port, secret=backend.secret, context=context)
    assert pop.body(1) == message(1)
    pop.quit()


def test_reload_moves_the_listener(backend: Backend) -> None:
    pop = backend.login()
    old_port = backend.port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    backend.edit(lambda doc: doc.set(("Servers", "MBX01", "PopBackEndPort"), free))
    assert backend.port == free
    endpoints = backend.run.call(_status(backend.service))["endpoints"]
    assert any(ep.endswith(f":{free}") for ep in endpoints)
    assert pop.noop().startswith(b"+OK")  # the established session survives the reload
    pop.quit()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old_port), timeout=2).recv(1)


def test_idle_session_is_closed_without_update(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.deliver(message(1))
    monkeypatch.setattr(_Connection, "_timeout", lambda self: 0.3)
    pop = backend.login()
    pop.dele(1)
    assert pop.sock.recv(100) == b""  # closed with no reply (RFC 1939 section 3)
    wait_for(lambda: backend.connections() == 0)
    assert len(backend.uids()) == 1


def test_protocol_log_has_one_line_per_command_and_no_secret(backend: Backend) -> None:
    backend.deliver(message(1))
    backend.edit(
        lambda doc: doc.set(("Servers", "MBX01", "PopSettings", "ProtocolLogEnabled"), True)
    )
    pop = backend.login()
    pop.retr(1)
    with pytest.raises(poplib.error_proto):
        pop._shortcmd("RETR 9")
    pop.quit()

    async def flush() -> Any:
        backend.service.protocol_log.flush()
        return backend.service.protocol_log.path

    path = backend.run.call(flush())
    assert path is not None and path.name.startswith("POP3BE")
    text = path.read_text()
    assert backend.secret not in text
    rows = [line.split(",") for line in text.splitlines() if not line.startswith("#")]
    assert [(r[9], r[11]) for r in rows] == [
        ("OpenSession", "R=OK"),
        ("retr", "R=OK"),
        ("retr", "R=ERR"),
        ("quit", "R=OK"),
    ]
    assert rows[0][5] == "alice" and rows[1][5] == "alice"
    assert rows[0][4] == "192.0.2.10:50123"  # the client from the PROXY header


# --- other sessions see the deletions ------------------------------------------------------
def test_store_subscriber_sees_the_pop3_deletion(backend: Backend) -> None:
    uids = backend.deliver(message(1), message(2))
    woke = threading.Event()
    unsubscribe = backend.inbox().subscribe(woke.set)
    try:
        pop = backend.login()
        pop.dele(1)
        assert not woke.is_set() or backend.uids() == uids  # nothing removed before QUIT
        woke.clear()
        pop.quit()
        assert woke.wait(5)
        assert backend.uids() == uids[1:]
    finally:
        unsubscribe()


WATCHER = """
import sys, threading
from server.settings.paths import Home
from server.store import NewMessage, open_store
from tests.conftest import wait_for
from tests.e2e import handover_support
from tests.e2e.backend_support import BackendRun, running
from tests.e2e.handover_support import hand_over
store = open_store(Home.resolve(sys.argv[1]), "MBX01")
box, target, gone = store.mailbox("alice"), int(sys.argv[2]), threading.Event()
def check():
    if target not in [row.uid for row in box.snapshot("INBOX").rows]:
        gone.set()
unsubscribe = box.subscribe(check)
print("ready", flush=True)
print("gone" if gone.wait(20) else "timeout", flush=True)
unsubscribe()
store.close()
"""


def test_subscriber_in_another_process_sees_the_pop3_deletion(backend: Backend) -> None:
    uids = backend.deliver(message(1), message(2))
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(backend.home.root), str(uids[0])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "ready\n"
        pop = backend.login()
        pop.dele(1)
        pop.quit()
        assert watcher.stdout.readline() == "gone\n"
    finally:
        watcher.kill()
        watcher.wait()


def test_imap_idle_session_sees_pop3_deletions_as_expunge(
    backend: Backend, in_process: Any
) -> None:
    pytest.importorskip("server.backend.imap.server")
    from server.settings.models import IMAP4BE

    backend.deliver(message(1), message(2), message(3))
    with in_process(IMAP4BE, backend.home) as imap_run:
        port = imap_run.service.bound_port()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            hand_over(sock, backend.secret, "alice", "IMAP4")
            reader = sock.makefile("rb")
            sock.sendall(b"s SELECT INBOX\r\ni IDLE\r\n")
            while not reader.readline().startswith(b"+ "):
                pass
            pop = backend.login()  # the IMAP session does not lock the maildrop
            pop.dele(1)
            pop.dele(3)
            pop.quit()
            expunged: list[bytes] = []
            others: list[bytes] = []
            while len(expunged) < 2:
                line = reader.readline().strip()
                (expunged if line.endswith(b" EXPUNGE") else others).append(line)
            assert expunged in ([b"* 1 EXPUNGE", b"* 2 EXPUNGE"], [b"* 3 EXPUNGE", b"* 1 EXPUNGE"])
            # UPDATE is one store change: no "FETCH (FLAGS (\\Deleted))" before the EXPUNGEs.
            assert not [line for line in others if b"Deleted" in line], others
            sock.sendall(b"DONE\r\n")
            assert reader.readline().startswith(b"i OK")
            reader.close()


# --- speed -----------------------------------------------------------------------------------
def test_two_hundred_message_session_serves_each_message(backend: Backend) -> None:
    # Speed is measured in bench/ (pop3 scenario), not asserted here against the wall clock.
    raws = [message(n, b"line of text\r\n" * 200) for n in range(200)]
    backend.inbox().append_many("INBOX", [NewMessage(raw) for raw in raws])  # one commit
    pop = backend.login()
    assert pop.stat()[0] == 200
    assert len(pop.uidl()[1]) == 200
    for number, raw in enumerate(raws, start=1):
        _, lines, _ = pop.retr(number)
        assert b"\r\n".join(lines) + b"\r\n" == raw
    pop.quit()
