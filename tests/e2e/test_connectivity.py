"""Test-ImapConnectivity / Test-PopConnectivity against the real front ends, back ends and
client submission (run in-process), through the library and through `mailctl`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from server.control.connectivity import ConnectionType, Probe, test_connectivity
from server.settings import store
from server.settings.models import DELIVERY, IMAP4, IMAP4BE, POP3, POP3BE, SUBMISSION
from server.settings.paths import Home
from server.store import open_store
from tests.e2e.conftest import REPO, ServiceRunner, _base_env
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, make_home

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    return home


def run_services(home: Home, in_process: Any, names: tuple[str, ...]) -> Iterator[None]:
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(in_process(name, home, "MBX01"))
        yield


@pytest.fixture
def everything(home: Home, in_process: Any) -> Iterator[None]:
    yield from run_services(home, in_process, (IMAP4BE, POP3BE, DELIVERY, IMAP4, POP3, SUBMISSION))


@pytest.fixture
def no_backends(home: Home, in_process: Any) -> Iterator[None]:
    yield from run_services(home, in_process, (IMAP4, POP3, SUBMISSION))


def probe(protocol: str, **kw: Any) -> Probe:
    return Probe(
        protocol=protocol,
        server="MBX01",
        user=kw.pop("user", "bob"),
        password=kw.pop("password", PASSWORD),
        timeout=kw.pop("timeout", 20),
        **kw,
    )


def results(home: Home, p: Probe) -> list[dict[str, Any]]:
    return [r.row() for r in test_connectivity(home, store.load(home).settings, p)]


def inbox_count(home: Home, user: str) -> int:
    mail = open_store(home, "MBX01")
    try:
        return mail.mailbox(user).status("INBOX").messages
    finally:
        mail.close()


@pytest.mark.parametrize(
    ("protocol", "kind"),
    [
        ("IMAP4", ConnectionType.Ssl),
        ("IMAP4", ConnectionType.Tls),
        ("POP3", ConnectionType.Ssl),
        ("POP3", ConnectionType.Tls),
    ],
)
def test_logon_send_and_retrieve_succeed(
    home: Home, everything: None, protocol: str, kind: ConnectionType
) -> None:
    rows = results(home, probe(protocol, connection_type=kind))
    assert [r["Result"] for r in rows] == ["Success"] * 3, rows
    label = "IMAP4" if protocol == "IMAP4" else "POP3"
    assert [r["Scenario"] for r in rows] == [f"{label} logon", "SMTP send", f"{label} retrieve"]
    assert all(r["CasServer"] == "MBX01" and r["LocalSite"] for r in rows)
    assert all(isinstance(r["Latency(MS)"], int) and r["Latency(MS)"] >= 0 for r in rows)
    assert inbox_count(home, "bob") == 0  # the test message removed itself


def test_light_mode_only_logs_on(home: Home, everything: None) -> None:
    rows = results(home, probe("IMAP4", light_mode=True))
    assert [(r["Scenario"], r["Result"]) for r in rows] == [("IMAP4 logon", "Success")]


def test_plaintext_fails_under_secure_login(home: Home, everything: None) -> None:
    for protocol in ("IMAP4", "POP3"):
        [row] = results(
            home, probe(protocol, connection_type=ConnectionType.Plaintext, light_mode=True)
        )
        assert row["Result"] == "Failure"
        assert "answered" in row["Error"], row


def test_wrong_password_and_disabled_protocol_fail(home: Home, everything: None) -> None:
    [wrong] = results(home, probe("POP3", password="nope", light_mode=True))
    assert wrong["Result"] == "Failure" and "answered" in wrong["Error"]
    [carol] = results(home, probe("IMAP4", user="carol", light_mode=True))
    assert carol["Result"] == "Failure"


def test_a_down_back_end_is_a_failure_with_a_useful_error(home: Home, no_backends: None) -> None:
    rows = results(home, probe("IMAP4", timeout=10))
    assert [r["Result"] for r in rows] == ["Failure", "Skipped", "Skipped"]
    assert rows[0]["Error"] and "MBX01" in rows[0]["Error"], rows
    assert rows[1]["Error"] == "an earlier step failed"


def test_nothing_listening_names_the_endpoint(home: Home) -> None:
    [row] = results(home, probe("POP3", light_mode=True))
    assert row["Result"] == "Failure" and "connection refused" in row["Error"]


def mailctl(home: Home, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailctl", *args],
        env=_base_env(home),
        cwd=REPO,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exchange_spelling_and_exit_status(home: Home, in_process: Any) -> None:
    with in_process(IMAP4, home, "MBX01"):
        with in_process(IMAP4BE, home, "MBX01"):
            ok = mailctl(
                home,
                "Test-ImapConnectivity",
                "-ClientAccessServer",
                "MBX01",
                "-MailboxCredential",
                "bob",
                "-ConnectionType",
                "Tls",
                "-LightMode",
                "-TrustAnySSLCertificate",
                "-Timeout",
                "15",
                "--output",
                "json",
            )
            assert ok.returncode == 0, ok.stderr
            [row] = json.loads(ok.stdout)
            assert set(row) == {
                "CasServer",
                "LocalSite",
                "Scenario",
                "Result",
                "Latency(MS)",
                "Error",
            }
            assert row["Result"] == "Success" and row["Error"] is None
            table = mailctl(
                home, "test-imapconnectivity", "--mailbox-credential", "bob", "--light-mode"
            )
            assert table.returncode == 0, table.stderr
            assert "Success" in table.stdout and "CasServer" in table.stdout
        down = mailctl(
            home, "Test-ImapConnectivity", "-MailboxCredential", "bob", "-LightMode", "-o", "json"
        )
        assert down.returncode == 1
        [row] = json.loads(down.stdout)
        assert row["Result"] == "Failure" and "not available" in row["Error"], row
    bad = mailctl(
        home, "Test-PopConnectivity", "-ConnectionType", "Carrier", "-MailboxCredential", "bob"
    )
    assert bad.returncode == 2 and "Plaintext, Ssl, Tls" in bad.stderr


def test_against_service_processes_started_by_mailctl(services: ServiceRunner) -> None:
    """The same check on real processes (`mailctl start-service`), as a monitoring job runs it."""
    add_mailboxes(services.home)
    services.start(IMAP4BE)
    services.start(IMAP4)
    args = ("Test-ImapConnectivity", "-MailboxCredential", "bob", "-LightMode", "-o", "json")
    up = mailctl(services.home, *args)
    assert up.returncode == 0, up.stderr + up.stdout
    services.stop(IMAP4BE)
    down = mailctl(services.home, *args)
    assert down.returncode == 1
    [row] = json.loads(down.stdout)
    assert row["Result"] == "Failure" and "not available" in row["Error"], row
