"""The whole life cycle from an empty folder, through the CLI only, with the real services."""

from __future__ import annotations

import json

import imapclient
import pytest

from server.runtime import tls
from server.settings.models import IMAP4, IMAP4BE

from .conftest import ServiceRunner, free_base_port

pytestmark = pytest.mark.e2e


def rows(runner: ServiceRunner, pattern: str) -> dict[str, dict]:
    out = runner.run_ok("get-service", pattern, "--output", "json").stdout
    return {row["Name"]: row for row in json.loads(out)}


def test_fresh_home_to_running_imap_and_back(fresh_home: ServiceRunner) -> None:
    runner = fresh_home
    base = free_base_port()
    runner.run_ok("init", "--base-port", str(base), "--no-demo")
    runner.new_mailbox("alice", "Alice-pass-1")

    # Off after install, as in Exchange.
    assert {r["Status"] for r in rows(runner, "*IMAP4*").values()} == {"Stopped"}

    runner.run_ok("enable-imap4")
    imap = rows(runner, "*IMAP4*")
    for name in (IMAP4, IMAP4BE):
        assert imap[name]["Status"] == "Running", imap[name]
        assert imap[name]["StartupType"] == "Automatic"
        assert imap[name]["Pid"] and imap[name]["Endpoints"]
    assert f"127.0.0.1:{base + 993} (SSL)" in imap[IMAP4]["Endpoints"]

    # A real client gets in through the front end, which hands over to the back end.
    context = tls.client_context(runner.home, verify=False)
    with imapclient.IMAPClient(
        "127.0.0.1", port=base + 993, ssl_context=context, timeout=10
    ) as client:
        client.login("alice", "Alice-pass-1")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        assert rows(runner, IMAP4)[IMAP4]["Connections"] == 1

    runner.run_ok("stop")
    assert {r["Status"] for r in rows(runner, "*").values()} == {"Stopped"}
    assert not list(runner.home.run.glob("*.pid"))

    # What a boot does: every Automatic service comes back. Transport and web (Automatic by
    # default) are not this test's business.
    runner.run_ok("Set-Service", "MSExchangeFrontEndTransport", "-StartupType", "Manual")
    runner.run_ok("set-service", "W3SVC", "--startup-type", "Manual")
    runner.run_ok("start")
    imap = rows(runner, "*IMAP4*")
    assert imap[IMAP4]["Status"] == imap[IMAP4BE]["Status"] == "Running"

    runner.run_ok("disable-imap4")
    imap = rows(runner, "*IMAP4*")
    assert {r["Status"] for r in imap.values()} == {"Stopped"}
    assert {r["StartupType"] for r in imap.values()} == {"Manual"}
