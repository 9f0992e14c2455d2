"""Mailboxes, CAS switches, receive connectors, StartupTypes, connection settings, init,
comments kept across edits, -WhatIf on every set- command, and the fast path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailctl import cli, fast
from server.directory import Directory
from server.moves.request import RequestBook
from server.settings import store
from server.settings.models import Settings
from server.settings.paths import Home
from server.settings.published import published
from tests.unit.mailctl.cli_helpers import mailctl, ok


def settings(home: Home) -> Settings:
    return store.load(home).settings


def test_new_mailbox_password_is_hashed_and_never_shown(home: Home) -> None:
    result = ok(home, "new-mailbox", "alice", "--password-stdin", stdin="S3cret pass\n")
    box = settings(home).Mailboxes["alice"]
    assert box.PrimarySmtpAddress == "alice@contoso.test" and box.Server == "MBX01"
    assert Directory(home).verify(settings(home), "alice@contoso.test", "S3cret pass")
    listing = ok(home, "Get-Mailbox", "alice", "-o", "list").out
    for text in (result.out, result.err, listing, home.settings_file.read_text()):
        assert "S3cret" not in text


def test_new_mailbox_exchange_password_and_options(home: Home) -> None:
    ok(
        home,
        "New-Mailbox",
        "-Name",
        "bob",
        "-Password",
        "(ConvertTo-SecureString -String 'P@ss w0rd' -AsPlainText -Force)",
        "-PrimarySmtpAddress",
        "robert@contoso.test",
        "-Type",
        "administrator",
    )
    box = settings(home).Mailboxes["bob"]
    assert (box.PrimarySmtpAddress, box.Type.value) == ("robert@contoso.test", "Administrator")
    assert Directory(home).verify(settings(home), "bob", "P@ss w0rd")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["New-Mailbox", "x y", "--password-stdin"], 2),
        (["New-Mailbox", "carol", "--password-stdin", "-Type", "Robot"], 2),
        (["New-Mailbox", "carol"], 2),  # no terminal, no --password-stdin
        (["Get-Mailbox", "nobody"], 1),
        (["Remove-Mailbox", "nobody"], 1),
    ],
)
def test_mailbox_errors(home: Home, args: list[str], code: int) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, *args, stdin="pw\n" if "--password-stdin" in args else "")
    assert result.code == code, result.err
    assert home.settings_file.read_bytes() == before


def test_set_and_remove_mailbox(home: Home) -> None:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="one\n")
    ok(
        home,
        "Set-Mailbox",
        "alice",
        "-EmailAddresses",
        "{a@contoso.test,al@contoso.test}",
        "-DisplayName",
        "Alice A",
    )
    assert settings(home).mailbox("al@contoso.test")[0] == "alice"
    ok(home, "set-mailbox", "alice", "--password-stdin", stdin="two\n")
    assert Directory(home).verify(settings(home), "alice", "two")
    ok(home, "Remove-Mailbox", "alice", "-Confirm:$false")
    assert "alice" not in settings(home).Mailboxes
    assert not Directory(home).verify(settings(home), "alice", "two")


def test_cas_switches(home: Home) -> None:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw\n")
    ok(
        home,
        "Set-CASMailbox",
        "alice@contoso.test",
        "-ImapEnabled",
        "$false",
        "-PopUseProtocolDefaults",
        "$false",
        "-PopMessagesRetrievalMimeFormat",
        "2",
        "-ImapSuppressReadReceipt",
        "$true",
    )
    row = ok(home, "Get-CASMailbox", "alice", "-o", "json").json()[0]
    assert row["ImapEnabled"] is False and row["PopEnabled"] is True
    assert row["PopMessagesRetrievalMimeFormat"] == "HtmlAndTextAlternative"
    assert row["ImapSuppressReadReceipt"] is True


def test_receive_connector_identity_forms(home: Home) -> None:
    ok(home, "Set-ReceiveConnector", "MBX01\\Client Frontend MBX01", "-MaxMessageSize", "10MB")
    rows = ok(home, "Get-ReceiveConnector", "-o", "json").json()
    assert {r["Identity"] for r in rows} == {
        "MBX01\\Client Frontend MBX01",
        "MBX01\\Client Proxy MBX01",
    }
    assert (
        next(r for r in rows if r["Name"] == "Client Frontend MBX01")["MaxMessageSize"] == "10 MB"
    )
    bad = mailctl(home, "Set-ReceiveConnector", "Client*", "-Enabled", "$false")
    assert bad.code == 2 and "several" in bad.err


def test_enable_disable_set_the_pairs(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runtime starts/stops services from these hooks; here we only see that they are
    # called once per command with the pair, after the StartupTypes were written.
    calls: list[tuple[str, str, list[str]]] = []
    cli.load_commands()  # the runtime appends its hooks on import: load before replacing
    monkeypatch.setattr(
        cli, "PROTOCOL_ENABLED", [lambda h, s, names: calls.append(("on", s, names))]
    )
    monkeypatch.setattr(
        cli, "PROTOCOL_DISABLED", [lambda h, s, names: calls.append(("off", s, names))]
    )
    ok(home, "enable-imap4")
    ok(home, "Enable-Pop3")
    services = settings(home).Servers["MBX01"].Services
    assert {
        services[n].value
        for n in ("MSExchangeIMAP4", "MSExchangeIMAP4BE", "MSExchangePOP3", "MSExchangePOP3BE")
    } == {"Automatic"}
    ok(home, "disable-pop3")
    services = settings(home).Servers["MBX01"].Services
    assert services["MSExchangePOP3"].value == services["MSExchangePOP3BE"].value == "Manual"
    assert services["MSExchangeIMAP4"].value == "Automatic"
    assert calls == [
        ("on", "MBX01", ["MSExchangeIMAP4", "MSExchangeIMAP4BE"]),
        ("on", "MBX01", ["MSExchangePOP3", "MSExchangePOP3BE"]),
        ("off", "MBX01", ["MSExchangePOP3", "MSExchangePOP3BE"]),
    ]


def test_disable_takes_a_startup_type(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    cli.load_commands()
    monkeypatch.setattr(cli, "PROTOCOL_DISABLED", [lambda h, s, names: calls.append(names)])
    ok(home, "disable-imap4", "--startup-type", "Disabled")
    ok(home, "Disable-Pop3", "-StartupType:disabled")
    services = settings(home).Servers["MBX01"].Services
    assert {
        services[n].value
        for n in ("MSExchangeIMAP4", "MSExchangeIMAP4BE", "MSExchangePOP3", "MSExchangePOP3BE")
    } == {"Disabled"}
    ok(home, "Disable-Imap4", "-StartupType", "Manual")
    assert settings(home).Servers["MBX01"].Services["MSExchangeIMAP4BE"].value == "Manual"
    assert len(calls) == 3  # stopped each time
    before = home.settings_file.read_bytes()
    for bad in ("Automatic", "Sometimes"):
        result = mailctl(home, "Disable-Pop3", "-StartupType", bad)
        assert result.code == 2 and "allowed: Manual, Disabled." in result.err, result.err
    assert home.settings_file.read_bytes() == before and len(calls) == 3


def test_connection_settings(home: Home) -> None:
    rows = ok(home, "get-connectionsettings", "-o", "json").json()
    assert [r["Server"] for r in rows] == [None, None, None]
    assert "not published" in ok(home, "get-connectionsettings").out
    ok(
        home,
        "Set-PopSettings",
        "-ExternalConnectionSettings",
        "mail.contoso.com:110:TLS,mail.contoso.com:995:SSL",
    )
    ok(
        home,
        "Set-ReceiveConnector",
        "Client Frontend MBX01",
        "-AdvertiseClientSettings",
        "$true",
        "-Fqdn",
        "smtp.contoso.com",
    )
    rows = {r["Protocol"]: r for r in ok(home, "Get-ConnectionSettings", "-o", "json").json()}
    port = settings(home).ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
    assert rows["POP"] == {
        "Protocol": "POP",
        "Server": "mail.contoso.com",
        "Port": 995,
        "Encryption": "SSL",
    }
    assert rows["IMAP"]["Server"] is None
    assert rows["SMTP"] == {
        "Protocol": "SMTP",
        "Server": "smtp.contoso.com",
        "Port": port,
        "Encryption": "TLS",
    }


def test_published_prefers_ssl_then_tls(home: Home) -> None:
    ok(home, "Set-ImapSettings", "-ExternalConnectionSettings", "a.contoso.com:143:TLS")
    shown = published(settings(home))
    assert (shown.IMAP.Server, shown.IMAP.Port, shown.IMAP.Encryption) == (
        "a.contoso.com",
        143,
        "TLS",
    )
    assert shown.SMTP is None
    assert published(settings(home), scope="Internal").IMAP.Encryption == "SSL"
    with pytest.raises(KeyError):
        published(settings(home), mailbox="nobody")


SET_COMMANDS = [
    ["Set-PopSettings", "-LoginType", "PlainTextLogin"],
    ["Set-ImapSettings", "-Banner", "Hello IMAP"],
    ["Set-PopSettings", "-MaxConnectionsPerUser", "3"],
    ["Set-ImapSettings", "-ExternalConnectionSettings", "mail.contoso.com:993:SSL"],
    ["Set-ReceiveConnector", "Client Frontend MBX01", "-AdvertiseClientSettings", "$true"],
    ["Set-ReceiveConnector", "Client Proxy MBX01", "-MaxLogonFailures", "7"],
    ["Set-Service", "MSExchangeIMAP4", "-StartupType", "Automatic"],
    ["Set-CASMailbox", "alice", "-PopEnabled", "$false"],
    ["Set-Mailbox", "alice", "-DisplayName", "Alice Liddell"],
    ["Set-ImapSettings", "-AuthenticatedConnectionTimeout", "00:20:00"],
]


def test_admin_comments_survive_ten_set_commands(home: Home) -> None:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw\n")
    text = home.settings_file.read_text()
    text = "# ADMIN: top of file, do not remove\n" + text
    text = text.replace(
        "[Servers.MBX01.PopSettings]", "# ADMIN: POP comment\n[Servers.MBX01.PopSettings]"
    )
    text = text.replace('LoginType = "SecureLogin"', 'LoginType = "SecureLogin" # ADMIN: inline', 1)
    text = text.replace(
        '[ReceiveConnectors."Client Frontend MBX01"]',
        '# ADMIN: connector\n[ReceiveConnectors."Client Frontend MBX01"]',
    )
    home.settings_file.write_text(text)
    assert len(SET_COMMANDS) == 10
    for args in SET_COMMANDS:
        before = home.settings_file.read_text()
        ok(home, *args)
        assert home.settings_file.read_text() != before, args
    final = home.settings_file.read_text()
    for comment in ("top of file", "POP comment", "ADMIN: inline", "ADMIN: connector"):
        assert comment in final
    shown = settings(home)
    assert shown.Servers["MBX01"].PopSettings.LoginType.value == "PlainTextLogin"
    assert shown.Mailboxes["alice"].DisplayName == "Alice Liddell"


@pytest.mark.parametrize(
    "args",
    SET_COMMANDS
    + [["enable-pop3"], ["disable-imap4"], ["New-Mailbox", "zed"], ["Remove-Mailbox", "alice"]],
)
def test_what_if_on_every_set_command(home: Home, args: list[str]) -> None:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw\n")
    ok(home, "Set-Service", "MSExchangeIMAP4", "-StartupType", "Automatic")
    before = home.settings_file.read_bytes()
    result = ok(home, *args, "-WhatIf")
    assert "What if" in result.out or "nothing to change" in result.out
    assert home.settings_file.read_bytes() == before


def test_fast_path_answers_like_the_full_path(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["get-popsettings", "--output", "json", "--home", str(home.root)]
    assert fast.answer(args) is None  # no cache yet
    slow = ok(home, "get-popsettings", "--output", "json").out
    assert fast.answer(args) == 0
    assert capsys.readouterr().out == slow
    assert fast.answer(["Get-ImapSettings", "-Output", "json", "-Home", str(home.root)]) == 0
    assert json.loads(capsys.readouterr().out)["Banner"].endswith("IMAP4 service is ready.")
    assert fast.answer([*args, "--server", "nope"]) is None
    assert fast.answer(["get-popsettings", "--home", str(home.root)]) is None  # table: full path
    ok(home, "Set-PopSettings", "-LoginType", "1")
    assert fast.answer(args) == 0  # a set- command leaves the cache current
    assert json.loads(capsys.readouterr().out)["LoginType"] == "PlainTextLogin"
    text = home.settings_file.read_text()
    home.settings_file.write_text(text.replace("PlainTextLogin", "SecureLogin"))
    assert fast.answer(args) is None  # edited by hand: the cache is stale


def test_init_creates_a_home(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "new")
    result = ok(
        home, "init", "--base-port", "30000", "--domain", "fabrikam.test", "--demo-password", "pw1"
    )
    assert "pw1" not in result.out
    shown = settings(home)
    assert shown.Servers["MBX01"].ImapSettings.UnencryptedOrTLSBindings[0].port == 30143
    assert shown.Mailboxes["demo"].PrimarySmtpAddress == "demo@fabrikam.test"
    assert Directory(home).verify(shown, "demo", "pw1")
    assert {
        v.value for k, v in shown.Servers["MBX01"].Services.items() if "POP" in k or "IMAP" in k
    } == {"Manual"}
    again = ok(home, "init")
    assert "nothing changed" in again.out
    random_pw = ok(Home.resolve(tmp_path / "other"), "init", "--base-port", "31000").out
    password = random_pw.rsplit("password ", 1)[1].strip()
    assert Directory(Home.resolve(tmp_path / "other")).verify(
        settings(Home.resolve(tmp_path / "other")), "demo", password
    )


@pytest.mark.parametrize(
    "args",
    [
        ["New-Mailbox", "Guest"],
        ["New-Mailbox", "administrator"],
        ["New-Mailbox", "visitor", "-PrimarySmtpAddress", "guest@contoso.test"],
        ["New-Mailbox", "Guest", "-Type", "Administrator"],
    ],
)
def test_a_mailbox_named_like_guest_or_administrator_must_say_so(
    home: Home, args: list[str]
) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, *args, "--password-stdin", stdin="pw\n")
    assert result.code == 2, result
    assert "can never use POP3 or IMAP4" in result.err
    assert home.settings_file.read_bytes() == before


def test_renaming_a_mailbox_to_guest_is_refused(home: Home) -> None:
    ok(home, "New-Mailbox", "alice", "--password-stdin", stdin="pw\n")
    before = home.settings_file.read_bytes()
    result = mailctl(home, "Set-Mailbox", "alice", "-PrimarySmtpAddress", "Guest@contoso.test")
    assert result.code == 2 and "Guest account" in result.err
    result = mailctl(home, "Set-Mailbox", "alice", "-EmailAddresses", "administrator@contoso.test")
    assert result.code == 2 and "Administrator account" in result.err
    assert home.settings_file.read_bytes() == before
    ok(home, "New-Mailbox", "Guest", "-Type", "Guest", "--password-stdin", stdin="pw\n")
    assert mailctl(home, "Set-Mailbox", "Guest", "-Type", "User").code == 2


def test_init_and_run_say_they_listen_on_loopback_only(tmp_path: Path, capsys) -> None:
    home = Home.resolve(tmp_path / "new")
    out = ok(home, "init", "--base-port", "30000", "--no-demo").out
    assert "Listening on 127.0.0.1 only" in out and "0.0.0.0:30993" in out
    from mailctl.commands.quickstart import _print_connection_info  # what `run` prints

    cli.set_home_override(str(home.root))
    _print_connection_info(settings(home), "MBX01")
    assert "Listening on 127.0.0.1 only" in capsys.readouterr().out
    ok(home, "Set-ImapSettings", "-SSLBindings", "0.0.0.0:30993")
    _print_connection_info(settings(home), "MBX01")
    assert "Listening on" not in capsys.readouterr().out
    cli.set_home_override(None)


def test_moving_a_mailbox_that_is_not_there_fails_in_one_sentence(home: Home) -> None:
    """New-MoveRequest and Set-Mailbox -Server look the mailbox up alike (cli.find_mailbox):
    exit 1, the name in the message, nothing written."""
    before = home.settings_file.read_text()
    for args in (
        ("New-MoveRequest", "nobody", "-TargetDatabase", "MBX01"),
        ("Set-Mailbox", "nobody", "-Server", "MBX01"),
    ):
        result = mailctl(home, *args)
        assert result.code == 1 and "there is no mailbox 'nobody'" in result.err, args
    assert home.settings_file.read_text() == before
    assert RequestBook(home).all() == []
