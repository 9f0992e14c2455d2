"""The fast path (mailctl.fast) answers get- commands with --output json from the cached
settings dump, byte for byte what the full command line prints; everything else it leaves to
the full path (returns None)."""

from __future__ import annotations

import pytest

from mailctl import fast, views
from server.settings import store
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

LINES = [
    ["get-popsettings", "--output", "json"],
    ["Get-ImapSettings", "-Output", "json", "-Server", "mbx01"],
    ["get-receiveconnector", "-o", "json"],
    ["get-receiveconnector", "Client*", "--output=json"],
    ["Get-ReceiveConnector", "-Identity", "MBX01\\Client Frontend MBX01", "-Output:json"],
    ["get-receiveconnector", "--server", "NOPE", "-o", "json"],
    ["get-mailbox", "-o", "json"],
    ["get-mailbox", "ALICE@contoso.test", "-o", "json"],
    ["Get-Mailbox", "-Identity", "contoso\\bob", "-Output", "JSON"],
    ["get-mailbox", "a*", "-o", "json"],
    ["get-casmailbox", "-o", "json"],
    ["Get-CASMailbox", "bob", "-Output", "json"],
    ["get-connectionsettings", "-o", "json"],
    ["Get-ConnectionSettings", "-Internal", "-Output", "json"],
    ["get-connectionsettings", "bobby@contoso.test", "--internal", "-o", "json"],
    ["Get-ConnectionSettings", "-Identity", "alice", "-Server", "nope", "-Output", "json"],
    ["get-service", "-o", "json"],
    ["Get-Service", "MSExchange*", "-Output", "json"],
    ["get-service", "*imap4*", "--server", "mbx01.contoso.test", "-o", "json"],
    ["Get-Service", "W3SVC", "-Output", "json"],
    ["Get-Service", "-Name", "*POP3*", "-Output", "json"],
    ["get-owavirtualdirectory", "-o", "json"],
    ["get-moverequest", "-o", "json"],
    ["Get-MoveRequestStatistics", "-Output", "json"],
    ["Get-OwaVirtualDirectory", "-Identity", "MBX01\\owa (Default Web Site)", "-Output", "json"],
    ["Get-OwaVirtualDirectory", "owa (Default Web Site)", "-Server", "mbx01", "-Output", "json"],
]


@pytest.fixture
def populated(home: Home) -> Home:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw\n")
    ok(home, "new-mailbox", "bob", "--password-stdin", stdin="pw\n")
    ok(home, "set-mailbox", "bob", "--email-addresses", "{bobby@contoso.test}")
    ok(home, "set-casmailbox", "alice", "--pop-enabled", "false")
    ok(home, "set-popsettings", "--external-connection-settings", "pop.contoso.com:995:SSL")
    ok(home, "set-receiveconnector", "Client Frontend MBX01", "--advertise-client-settings", "1")
    return home


@pytest.mark.parametrize("line", LINES, ids=[" ".join(line) for line in LINES])
def test_fast_answers_byte_for_byte_like_the_full_path(
    populated: Home, line: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    full = ok(populated, *line).out
    assert fast.answer([*line, "--home", str(populated.root)]) == 0
    assert capsys.readouterr().out == full


@pytest.mark.parametrize(
    "line",
    [
        ["get-mailbox", "nobody", "-o", "json"],  # the full path says there is none, exit 1
        ["get-receiveconnector", "Nope*", "-o", "json"],
        ["get-popsettings", "--server", "nope", "-o", "json"],
        ["get-mailbox", "-o", "table"],
        ["get-mailbox"],
        ["get-mailbox", "a", "b", "-o", "json"],  # two identities: usage error
        ["get-popsettings", "demo", "-o", "json"],  # takes no identity
        ["get-casmailbox", "--server", "MBX01", "-o", "json"],  # takes no --server
        ["Get-Mailbox", "-Out", "json"],  # an abbreviation: the full path resolves those
        ["get-mailbox", "-o", "json", "|", "Format-List"],
        ["get-service", "NoSuchService", "-o", "json"],  # the full path names the services
        ["get-service", "--server", "nope", "-o", "json"],
        ["get-mailbox", "-o"],
        ["get-connectionsettings", "nobody", "-o", "json"],
        ["get-connectionsettings", "--server", "nope", "-o", "json"],
        ["Get-ConnectionSettings", "-Internal:$false", "-Output", "json"],
        ["get-connectionsettings", "-o", "table"],
    ],
)
def test_anything_else_goes_to_the_full_path(populated: Home, line: list[str]) -> None:
    ok(populated, "get-mailbox", "-o", "json")  # the cache is warm
    assert fast.answer([*line, "--home", str(populated.root)]) is None


def test_no_cache_or_a_stale_one_goes_to_the_full_path(home: Home) -> None:
    line = ["get-mailbox", "-o", "json", "--home", str(home.root)]
    assert fast.answer(line) is None  # nothing cached yet
    ok(home, "new-mailbox", "carol", "--password-stdin", stdin="pw\n")  # a write caches
    assert fast.answer(line) == 0
    home.settings_file.write_text(home.settings_file.read_text() + "\n# edited by hand\n")
    assert fast.answer(line) is None
    assert ok(home, "get-mailbox", "-o", "json").json()[0]["Name"] == "carol"
    assert mailctl(home, "get-mailbox", "nobody", "-o", "json").code == 1


def test_find_mailbox_finds_what_settings_mailbox_finds(populated: Home) -> None:
    settings = store.load(populated).settings
    dump = settings.model_dump(mode="json")["Mailboxes"]
    for identity in ["alice", "ALICE", "bobby@contoso.test", "contoso\\Bob", " bob ", "x", ""]:
        found = settings.mailbox(identity)
        assert views.find_mailbox(dump, identity) == (found[0] if found else None), identity


@pytest.mark.parametrize("columns", ["80", "200"])
def test_help_from_the_index_is_what_click_prints(
    columns: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailctl.cli import run

    monkeypatch.setenv("COLUMNS", columns)
    assert run(["--help"]) == 0
    full = capsys.readouterr().out
    assert fast.answer(["--help"]) == 0
    assert capsys.readouterr().out == full
    assert fast.answer(["-h"]) == 0 and capsys.readouterr().out == full
    monkeypatch.setenv("COLUMNS", "60")  # narrower: click wraps differently, the full path runs
    assert fast.answer(["--help"]) is None
    assert fast.answer(["--help", "x"]) is None


def test_certificates_fast_like_the_full_path(
    populated: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.runtime import tls

    thumb = tls.ensure_certificate(populated, "IMAP", "mbx01.contoso.test").thumbprint
    tls.new_certificate(populated, "mail.contoso.test", ["mail.contoso.test"], ["POP"])
    for line in (
        ["get-exchangecertificate", "-o", "json"],
        ["Get-ExchangeCertificate", thumb.lower(), "-Output", "json"],
    ):
        full = ok(populated, *line).out
        assert fast.answer([*line, "--home", str(populated.root)]) == 0, line
        assert capsys.readouterr().out == full
    assert (
        fast.answer(
            ["get-exchangecertificate", "NOPE", "-o", "json", "--home", str(populated.root)]
        )
        is None
    )


def test_mailbox_statistics_fast_like_the_full_path(
    populated: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """ItemCount and TotalItemSize read with plain sqlite3 (server.store.usage), quotas from
    the cache: the same rows as the full path, which opens the store."""
    from server.store import NewMessage, open_store

    ok(
        populated,
        "set-mailbox",
        "bob",
        "--use-database-quota-defaults",
        "$false",
        "--issue-warning-quota",
        "1KB",
        "--prohibit-send-quota",
        "1MB",
    )
    db = open_store(populated, "MBX01")
    try:
        db.mailbox("alice").append_many("INBOX", [NewMessage(b"Subject: a\r\n\r\nhi\r\n")] * 3)
        db.mailbox("bob").append_many("INBOX", [NewMessage(b"Subject: b\r\n\r\n" + b"x" * 2000)])
    finally:
        db.close()
    lines = (
        ["get-mailboxstatistics", "-o", "json"],
        ["Get-MailboxStatistics", "-Identity", "BOB", "-Output", "json"],
        ["get-mailboxstatistics", "a*", "--output=json"],
    )
    for line in lines:
        full = ok(populated, *line).out
        assert fast.answer([*line, "--home", str(populated.root)]) == 0, line
        assert capsys.readouterr().out == full
    shown = {row["Identity"]: row for row in ok(populated, *lines[0]).json()}
    assert shown["alice"]["ItemCount"] == 3 and shown["bob"]["StorageLimitStatus"] == "IssueWarning"
    assert (
        fast.answer(
            ["get-mailboxstatistics", "nobody", "-o", "json", "--home", str(populated.root)]
        )
        is None
    )


def test_every_read_command_has_a_fast_path(
    populated: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/cli_speed.py holds every read command to 250 ms: none may need the full path
    (typer, pydantic: 300 ms and more) once the cache is warm."""
    from mailctl.command_index import COMMANDS

    ok(populated, "get-mailbox", "-o", "json")  # the cache is warm
    reads = [n for n, m in COMMANDS.items() if n.startswith("get-") and m != "unsupported"]
    assert "get-service" in reads and "get-mailboxstatistics" in reads
    for name in reads:
        assert fast.answer([name, "-o", "json", "--home", str(populated.root)]) == 0, name
    assert fast.answer(["--help"]) == 0
    capsys.readouterr()


def test_move_requests_fast_like_the_full_path(
    populated: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.moves.request import MoveRequest, RequestBook

    RequestBook(populated).create(MoveRequest("alice", "MBX01", "MBX02", ItemsTransferred=7))
    for line in (
        ["get-moverequest", "-o", "json"],
        ["Get-MoveRequest", "alice@contoso.test", "-Output", "json"],
        ["get-moverequeststatistics", "alice", "-o", "json"],
    ):
        full = ok(populated, *line).out
        assert fast.answer([*line, "--home", str(populated.root)]) == 0
        assert capsys.readouterr().out == full
        assert '"ItemsTransferred": 7' in full
    # bob has no request: the full path says so (exit 1)
    assert (
        fast.answer(["get-moverequest", "bob", "-o", "json", "--home", str(populated.root)]) is None
    )
    assert mailctl(populated, "get-moverequest", "bob", "-o", "json").code == 1
