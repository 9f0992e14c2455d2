"""Script and shell friendliness of the CLI: help on every subcommand with -h, help that fits
80 columns, real defaults in help, a repeated option refused, -Server by FQDN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailctl import cli
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

REPO = Path(__file__).resolve().parents[3]


def commands() -> list[str]:
    cli.load_commands()
    return sorted(name for name, info in cli.COMMANDS.items() if name == info.name)


@pytest.mark.parametrize("name", commands())
def test_dash_h_is_help_on_every_subcommand(home: Home, name: str) -> None:
    result = mailctl(home, name, "-h")
    assert result.code == 0, result
    assert f"Usage: mailctl {name}" in result.out


def help_text(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "mailctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    ).stdout


@pytest.mark.parametrize(
    "name",
    [
        "set-popsettings",
        "set-imapsettings",
        "set-casmailbox",
        "set-receiveconnector",
        "test-imapconnectivity",
    ],
)
def test_help_at_80_columns_keeps_option_names_whole(name: str) -> None:
    text = help_text(name, "--help")
    assert "…" not in text
    command = cli.click_group().commands[name]
    words = set(text.replace(",", " ").split())
    for param in command.params:
        for option in param.opts:
            if option.startswith("--") and not getattr(param, "hidden", False):
                assert option in words, option


def test_help_shows_the_real_default_of_server_dependent_settings() -> None:
    text = " ".join(help_text("set-popsettings", "--help").split())
    assert "Default: {}" not in text
    assert "Default: {<FQDN>:995:SSL, <FQDN>:110:TLS}" in text
    assert "Default: {[::]:995, 0.0.0.0:995}" in text
    assert "Default: {[::]:110, 0.0.0.0:110}" in text
    assert "ready.." not in text


@pytest.mark.parametrize(
    "args",
    [
        ["Set-PopSettings", "-Banner", "a", "-Banner", "b"],
        ["Set-PopSettings", "-Banner", "a", "-ban", "b"],
        ["set-popsettings", "--banner", "a", "--banner=b"],
        ["Set-PopSettings", "-SSLBindings", "127.0.0.1:1", "-SSLBindings", "127.0.0.1:2"],
    ],
)
def test_a_repeated_option_is_refused(home: Home, args: list[str]) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, *args)
    assert result.code == 2 and "given twice" in result.err, result
    assert home.settings_file.read_bytes() == before


@pytest.mark.parametrize("server", ["mbx01.contoso.test", "MBX01.Contoso.Test.", "mbx01"])
def test_server_takes_the_fqdn_too(home: Home, server: str) -> None:
    ok(home, "Set-PopSettings", "-Server", server, "-LoginType", "PlainTextLogin")
    shown = ok(home, "Get-PopSettings", "-Server", server, "-o", "json").json()
    assert shown["Server"] == "MBX01" and shown["LoginType"] == "PlainTextLogin"
    assert ok(home, "get-service", "--server", server, "-o", "json").json()


def test_a_toml_syntax_error_is_one_sentence_for_set_commands(home: Home) -> None:
    with home.settings_file.open("a") as f:
        f.write("garbage = = \n")
    before = home.settings_file.read_bytes()
    result = mailctl(home, "Set-PopSettings", "-LoginType", "1")
    assert result.code == 2, result
    assert "not valid TOML" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert home.settings_file.read_bytes() == before


def test_an_unreadable_settings_file_is_one_sentence(home: Home) -> None:
    home.settings_file.unlink()
    home.settings_file.mkdir()  # root reads any file: a folder is what cannot be read
    for args in (["Set-PopSettings", "-LoginType", "1"], ["get-popsettings"], ["get-service"]):
        result = mailctl(home, *args)
        assert result.code in (1, 2), (args, result)
        assert "cannot read" in result.err or "Is a directory" in result.err, (args, result)
        assert "Traceback" not in result.err


def test_a_read_only_home_is_one_sentence(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import store

    def refuse(path: Path, *_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store, "atomic_write", refuse)
    result = mailctl(home, "Set-PopSettings", "-LoginType", "1")
    assert result.code in (1, 2), result
    assert "read-only" in result.err and "Traceback" not in result.err
    result = mailctl(home, "New-Mailbox", "zed", "--password-stdin", stdin="pw\n")
    assert result.code in (1, 2) and "Traceback" not in result.err, result


@pytest.mark.parametrize("cmdlet", ["Test-ImapConnectivity", "Test-PopConnectivity"])
def test_connectivity_takes_exchanges_other_parameters(home: Home, cmdlet: str) -> None:
    ok(home, "New-Mailbox", "alice", "--password-stdin", stdin="pw\n")
    result = mailctl(
        home,
        cmdlet,
        "-MailboxCredential",
        "alice",
        "-LightMode",
        "-PerConnectionTimeout",
        "5",
        "-MailboxServer",
        "mbx01.contoso.test",
        "-ResetTestAccountCredentials",
        "-Timeout",
        "10",
        stdin="pw\n",
    )
    assert result.code == 1, result  # it ran: nothing listens, so the logon fails
    assert "Failure" in result.out
    wrong = mailctl(
        home, cmdlet, "-MailboxCredential", "alice", "-MailboxServer", "MBX09", stdin="pw\n"
    )
    assert wrong.code == 2 and "no server" in wrong.err, wrong
    assert mailctl(home, cmdlet, "-PerConnectionTimeout", "121").code == 2


def test_per_connection_timeout_caps_each_connection(home: Home) -> None:
    from server.control.connectivity import Probe, Tester
    from server.settings import store

    settings = store.load(home).settings
    probe = Probe(
        protocol="IMAP4",
        server="MBX01",
        user="a",
        password="p",
        timeout=100,
        per_connection_timeout=7,
        clock=lambda: 0.0,
    )
    assert Tester(home, settings, probe).remaining() == 7
    probe.per_connection_timeout = None
    assert Tester(home, settings, probe).remaining() == 100


def test_add_and_remove_edit_a_multi_valued_parameter(home: Home) -> None:
    def external() -> list[str]:
        return ok(home, "Get-PopSettings", "-o", "json").json()["ExternalConnectionSettings"]

    ok(
        home,
        "Set-PopSettings",
        "-ExternalConnectionSettings",
        '@{Add="mail.contoso.test:995:SSL","mail.contoso.test:110:TLS"}',
    )
    assert external() == ["mail.contoso.test:995:SSL", "mail.contoso.test:110:TLS"]
    ok(
        home,
        "Set-PopSettings",
        "-ExternalConnectionSettings",
        '@{Remove="MAIL.contoso.test:110:tls"; '
        'Add="pop.contoso.test:995:SSL","mail.contoso.test:995:SSL"}',
    )
    assert external() == ["mail.contoso.test:995:SSL", "pop.contoso.test:995:SSL"]
    ok(
        home,
        "Set-ReceiveConnector",
        "Client Frontend MBX01",
        "-AuthMechanism",
        "@{Remove=Integrated}",
    )
    shown = ok(home, "Get-ReceiveConnector", "Client Frontend MBX01", "-o", "json").json()
    assert "Integrated" not in shown[0]["AuthMechanism"] and "Tls" in shown[0]["AuthMechanism"]
    before = home.settings_file.read_bytes()
    for bad in (
        "@{Add=nonsense}",
        '@{Foo="a:1:SSL"}',
        '@{Add="a:1:SSL"; Add="b:2:SSL"}',
        "@{Add=a:1:SSL",
    ):
        result = mailctl(home, "Set-PopSettings", "-ExternalConnectionSettings", bad)
        assert result.code == 2 and "Traceback" not in result.err, (bad, result)
    assert home.settings_file.read_bytes() == before


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".settings.lock" and p.parent.name != "run"
    }


def test_what_if_on_commands_that_act_changes_nothing(home: Home, tmp_path: Path) -> None:
    from server.runtime import tls

    ok(home, "New-Mailbox", "alice", "--password-stdin", stdin="pw\n")
    cert = tls.ensure_certificate(home, "IMAP", "mbx01.contoso.test")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    pem = tmp_path / "chain.pem"
    pem.write_bytes(cert.cert_file.read_bytes() + cert.key_file.read_bytes())
    before = _snapshot(home.root)
    lines = [
        ["Start-Service", "MSExchangeIMAP4", "-WhatIf"],
        ["Stop-Service", "MSExchangeIMAP4", "-WhatIf"],
        ["Restart-Service", "MSExchangePOP3BE", "-WhatIf"],
        ["New-ExchangeCertificate", "-SubjectName", "CN=mail.contoso.test", "-WhatIf"],
        ["Enable-ExchangeCertificate", cert.thumbprint, "-Services", "POP", "-WhatIf"],
        ["Import-Mailbox", "alice", "--maildir", str(maildir), "-WhatIf"],
        ["Prune-MailboxDatabase", "-OlderThanDays", "0", "-WhatIf"],
        ["Install-Systemd", "--output-dir", str(tmp_path / "units"), "-WhatIf"],
        ["Import-ExchangeCertificate", "-FileName", str(pem), "-WhatIf"],
    ]
    for args in lines:
        result = ok(home, *args)
        assert result.out.startswith("What if: would "), (args, result.out)
    assert _snapshot(home.root) == before
    assert not (tmp_path / "units").exists()
    fresh = Home.resolve(tmp_path / "fresh")
    assert ok(fresh, "init", "--base-port", "30000", "-WhatIf").out.startswith("What if:")
    assert not fresh.settings_file.exists()
