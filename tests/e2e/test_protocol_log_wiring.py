"""Protocol logging of the real IMAP4 and POP3 pairs (reference section 9): switched on and
off live through settings, front end and back end write into the same folder (IMAP4*, IMAP4BE*,
POP3*, POP3BE*), and one client session shows up in both with the same client address."""

from __future__ import annotations

import csv
import imaplib
import poplib
import re
from pathlib import Path

import pytest

from server.settings import store
from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE
from tests.conftest import wait_for
from tests.e2e.conftest import ServiceRunner
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, client_context, ports

pytestmark = pytest.mark.e2e

SERVICES = (IMAP4BE, POP3BE, IMAP4, POP3)
FIELDS = [
    "dateTime",
    "sessionId",
    "seqNumber",
    "sIp",
    "cIp",
    "user",
    "duration",
    "rqsize",
    "rpsize",
    "command",
    "parameters",
    "context",
]


def lines(folder: Path, prefix: str) -> list[dict[str, str]]:
    """The rows of the files of one service (IMAP4 must not pick up IMAP4BE's files)."""
    pattern = re.compile(re.escape(prefix) + r"\d{6,10}-\d+\.LOG")
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.LOG")) if folder.is_dir() else []:
        if pattern.fullmatch(path.name):
            text = path.read_text()
            assert "#Fields: " + ",".join(FIELDS) in text
            body = [line for line in text.splitlines() if line and not line.startswith("#")]
            rows += list(csv.DictReader(body, fieldnames=FIELDS))
    return rows


def commands(rows: list[dict[str, str]], port: int) -> list[str]:
    """The commands logged for the client connection from local port `port`."""
    return [r["command"] for r in rows if r["cIp"].endswith(f":{port}")]


def wait_for_version(runner: ServiceRunner) -> None:
    version = store.load(runner.home).version
    wait_for(lambda: all(runner.get(name).SettingsVersion == version for name in SERVICES))


def imap_session(runner: ServiceRunner) -> int:
    _, imaps = ports(runner.home, "IMAP")
    client = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=client_context(runner.home))
    port = client.sock.getsockname()[1]  # imaplib has asked for CAPABILITY
    client.login("alice", PASSWORD)
    client.select("INBOX")
    client.noop()
    client.logout()
    return port


def pop_session(runner: ServiceRunner) -> int:
    _, pop3s = ports(runner.home, "POP")
    client = poplib.POP3_SSL("127.0.0.1", pop3s, context=client_context(runner.home))
    port = client.sock.getsockname()[1]
    client.capa()
    client.user("alice")
    client.pass_(PASSWORD)
    client.stat()
    client.quit()
    return port


def set_logging(runner: ServiceRunner, on: bool) -> None:
    value = "$true" if on else "$false"
    runner.run_ok("set-imapsettings", "--protocol-log-enabled", value)
    runner.run_ok("set-popsettings", "--protocol-log-enabled", value)
    wait_for_version(runner)


def test_front_and_back_ends_log_one_session_each_when_switched_on(
    services: ServiceRunner,
) -> None:
    runner = services
    add_mailboxes(runner.home)
    for name in SERVICES:
        runner.start(name)
    logs = runner.home.logs / "ProtocolLog"
    imap_folder, pop_folder = logs / "Imap4", logs / "Pop3"

    quiet_imap, quiet_pop = imap_session(runner), pop_session(runner)  # logging is off

    set_logging(runner, True)
    imap_port, pop_port = imap_session(runner), pop_session(runner)
    # Lines reach the files within a second (buffered); the proxy line is the front end's
    # last, written when the relay ends.
    wait_for(
        lambda: (
            "proxy" in commands(lines(imap_folder, "IMAP4"), imap_port)
            and "logout" in commands(lines(imap_folder, "IMAP4BE"), imap_port)
            and "proxy" in commands(lines(pop_folder, "POP3"), pop_port)
            and "quit" in commands(lines(pop_folder, "POP3BE"), pop_port)
        )
    )

    front = [r for r in lines(imap_folder, "IMAP4") if r["cIp"].endswith(f":{imap_port}")]
    assert [r["command"] for r in front] == ["OpenSession", "capability", "login", "proxy"]
    login, proxy = front[2], front[3]
    assert login["user"] == "alice" and login["parameters"] == "alice"
    assert login["context"].startswith("R=OK")
    assert proxy["user"] == "alice" and proxy["parameters"].startswith("MBX01 ")
    assert int(proxy["rqsize"]) > 0 and int(proxy["rpsize"]) > 0
    assert "ClosedBy=" in proxy["context"]
    back = commands(lines(imap_folder, "IMAP4BE"), imap_port)
    # The hand-over comes before IMAP: the back end's session starts logged in (PREAUTH).
    assert back[0] == "OpenSession" and {"select", "noop", "logout"} <= set(back)
    assert "authenticate" not in back
    select = next(
        r
        for r in lines(imap_folder, "IMAP4BE")
        if r["cIp"].endswith(f":{imap_port}") and r["command"] == "select"
    )
    assert select["user"] == "alice" and select["parameters"] == "INBOX"
    assert select["context"] == "R=OK" and int(select["rpsize"]) > 0

    pop_front = commands(lines(pop_folder, "POP3"), pop_port)
    assert pop_front == ["OpenSession", "capa", "user", "pass", "proxy"]
    assert {"stat", "quit"} <= set(commands(lines(pop_folder, "POP3BE"), pop_port))

    for folder in (imap_folder, pop_folder):
        for path in folder.glob("*.LOG"):
            text = path.read_text()
            assert PASSWORD not in text
            assert f":{quiet_imap}," not in text and f":{quiet_pop}," not in text
    assert {re.sub(r"\d{8}-\d+\.LOG$", "", p.name) for p in logs.glob("*/*.LOG")} == {
        "IMAP4",
        "IMAP4BE",
        "POP3",
        "POP3BE",
    }

    set_logging(runner, False)
    sizes = {p: p.stat().st_size for p in logs.glob("*/*.LOG")}
    late_imap, late_pop = imap_session(runner), pop_session(runner)
    for name in SERVICES:
        runner.stop(name)  # flushes whatever is buffered
    assert {p: p.stat().st_size for p in logs.glob("*/*.LOG")} == sizes
    assert late_imap and late_pop
