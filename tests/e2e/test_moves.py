"""Mailbox moves end to end on one host with two servers, all services real processes: an IMAP
client IDLEs through MBX01's front end while alice's mailbox moves from MBX01 to MBX02 and
mail keeps arriving; the client is told BYE, reconnects through the same front end, lands on
MBX02 and finds every message, with its flags. The source copy is gone afterwards."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import watchfiles
from imapclient import IMAPClient

from server.delivery.client import deliver
from server.directory import find_entry
from server.moves.request import MoveRequest, MoveStatus, RequestBook
from server.runtime.main import query_control
from server.settings import store
from server.settings.models import DELIVERY, IMAP4, IMAP4BE, REPLICATION, default_server
from server.settings.paths import Home
from tests.e2e.conftest import ServiceRunner, _base_env
from tests.e2e.frontend_support import (
    PASSWORD,
    add_mailboxes,
    client_context,
    free_port_plan,
    make_home,
    ports,
    save,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def site(tmp_path: Path):
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    settings = store.load(home).settings
    settings.Servers["MBX02"] = default_server("MBX02", "mbx02.contoso.test", free_port_plan())
    save(home, settings)
    runner = ServiceRunner(home, _base_env(home))
    try:
        for name, server in [
            (IMAP4BE, "MBX01"),
            (IMAP4BE, "MBX02"),
            (DELIVERY, "MBX01"),
            (DELIVERY, "MBX02"),
            (REPLICATION, "MBX01"),
            (REPLICATION, "MBX02"),
            (IMAP4, "MBX01"),
        ]:
            runner.start(name, server)
        yield runner
    finally:
        runner.stop_all()


def message(subject: str) -> bytes:
    return f"From: bob@contoso.test\r\nTo: alice@contoso.test\r\nSubject: {subject}\r\n\r\nx\r\n".encode()


def deliver_like_the_spool(home: Home, subject: str) -> int:
    """Hand one message to the delivery service of alice's server as the submission spool
    does: the server looked up at each attempt, a 4xx tried again. Returns the attempts."""
    for attempt in range(1, 200):
        settings = store.load(home).settings
        entry = find_entry(settings, "alice", home)
        assert entry is not None
        [(code, text)] = deliver(
            home,
            settings,
            entry.server_name,
            "test",
            "bob@contoso.test",
            ["alice@contoso.test"],
            message(subject),
        )
        if code == 250:
            return attempt
        assert 400 <= code < 500, text  # a move never bounces mail
        time.sleep(0.02)  # the spool's retry delay, shortened
    raise AssertionError(f"{subject} was never delivered")


def wait_for_status(home: Home, *wanted: MoveStatus, timeout: float = 120) -> MoveRequest:
    """Until alice's move request has one of `wanted` (woken by the request file's changes)."""
    book = RequestBook(home)
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    found = book.get("alice")
    if found is not None and found.Status in wanted:
        return found
    for _ in watchfiles.watch(
        book.folder, stop_event=stop, yield_on_timeout=True, rust_timeout=1000
    ):
        found = book.get("alice")
        if found is not None and found.Status in wanted:
            return found
        assert found is None or found.Status != MoveStatus.Failed, found
        assert time.monotonic() < deadline, f"move still {found}"
    raise AssertionError("unreachable")


class IdleClient:
    """A raw IMAP client on the front end, IDLE on INBOX, collecting what the server says."""

    def __init__(self, home: Home) -> None:
        _, imaps = ports(home, "IMAP")
        raw = socket.create_connection(("127.0.0.1", imaps), timeout=60)
        self.sock: ssl.SSLSocket = client_context(home).wrap_socket(
            raw, server_hostname="127.0.0.1"
        )
        self.file = self.sock.makefile("rb")
        self.lines: list[bytes] = [self.file.readline()]
        self.command(b"a LOGIN alice " + PASSWORD.encode())
        self.command(b"b SELECT INBOX")
        self.sock.sendall(b"c IDLE\r\n")
        assert self.file.readline().startswith(b"+")

    def command(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")
        tag = line.split()[0]
        while not (got := self.file.readline()).startswith(tag + b" "):
            assert got, "closed"
        assert got.split()[1] == b"OK", got

    def until_closed(self) -> list[bytes]:
        while line := self.file.readline():
            self.lines.append(line)
        self.sock.close()
        return self.lines


# Seven service processes start and stop, on a machine the rest of the suite shares.
@pytest.mark.timeout(300)
def test_a_move_while_a_client_idles_loses_no_message(site: ServiceRunner) -> None:
    home = site.home
    for n in range(20):
        deliver_like_the_spool(home, f"before {n}")
    _, imaps = ports(home, "IMAP")
    with IMAPClient("127.0.0.1", port=imaps, ssl_context=client_context(home), timeout=30) as c:
        c.login("alice", PASSWORD)
        c.create_folder("Projects")
        c.select_folder("INBOX")
        first = c.search("ALL")[:3]
        c.add_flags(first, [b"\\Seen", b"$Work"])
        c.move(first[2:], "Projects")
    idle = IdleClient(home)

    site.run_ok(
        "New-MoveRequest",
        "-Identity",
        "alice",
        "-TargetDatabase",
        "MBX02",
        "-SuspendWhenReadyToComplete",
    )
    ready = wait_for_status(home, MoveStatus.AutoSuspended)
    assert ready.ItemsTransferred == 20 and ready.PercentComplete == 95
    # Copied, not switched: the mailbox still lives and takes mail on MBX01.
    for n in range(5):
        assert deliver_like_the_spool(home, f"during {n}") == 1

    site.run_ok("Resume-MoveRequest", "alice")
    racing = threading.Thread(
        target=lambda: [deliver_like_the_spool(home, f"racing {n}") for n in range(10)]
    )
    racing.start()
    said = idle.until_closed()
    racing.join()
    done = wait_for_status(home, MoveStatus.Completed, MoveStatus.CompletedWithWarning)
    assert done.Status == MoveStatus.Completed, done.Message
    print(f"fenced for {done.TotalFinalizationDuration} s; {done.Passes} passes")
    assert any(line.startswith(b"* BYE") and b"MBX02" in line for line in said), said
    assert find_entry(store.load(home).settings, "alice", home).server_name == "MBX02"

    # The same front end now hands alice to MBX02, with everything (once it runs on the
    # settings with the switch: a login a moment earlier gets a temporary NO).
    want, deadline = store.load(home).version, time.monotonic() + 30
    while (query_control(home, IMAP4, "MBX01") or {}).get("SettingsVersion") != want:
        assert time.monotonic() < deadline, "MSExchangeIMAP4 did not pick up the switch"
        time.sleep(0.02)
    with IMAPClient("127.0.0.1", port=imaps, ssl_context=client_context(home), timeout=30) as c:
        c.login("alice", PASSWORD)
        subjects = {}
        for folder in ("INBOX", "Projects"):
            c.select_folder(folder, readonly=True)
            fetched = c.fetch(c.search("ALL"), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
            for data in fetched.values():
                subject = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
                # \Recent: the first session on MBX02 is the first to see them there.
                subjects[subject] = (folder, set(data[b"FLAGS"]) - {b"\\Recent"})
    expected = (
        [f"before {n}" for n in range(20)]
        + [f"during {n}" for n in range(5)]
        + [f"racing {n}" for n in range(10)]
    )
    assert sorted(subjects) == sorted(expected)
    assert subjects["before 0"] == ("INBOX", {b"\\Seen", b"$Work"})
    assert subjects["before 2"] == ("Projects", {b"\\Seen", b"$Work"})
    assert not (home.database("MBX01") / "mailboxes" / "alice").exists()

    stats = site.run_ok("Get-MoveRequestStatistics", "alice", "--output", "json").stdout
    assert '"Completed"' in stats and '"PercentComplete": 100' in stats
    refused = site.mailctl("Set-Mailbox", "alice", "-Server", "MBX01")
    assert refused.returncode == 2 and "New-MoveRequest" in refused.stderr
    site.run_ok("Remove-MoveRequest", "alice")
    assert site.run_ok("Get-MoveRequest", "--output", "json").stdout.strip() == "[]"
