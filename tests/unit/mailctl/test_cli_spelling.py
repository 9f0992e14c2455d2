"""The Exchange spelling as it reaches mailctl through a POSIX shell (argv already split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailctl import cli, commands
from server.settings import store
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok


def pop(home: Home) -> dict[str, object]:
    return ok(home, "get-popsettings", "-o", "json").json()


def imap(home: Home) -> dict[str, object]:
    return ok(home, "get-imapsettings", "-o", "json").json()


def test_every_command_module_loads() -> None:
    cli.load_commands()
    assert commands.FAILED == {}


def test_issue_examples(home: Home) -> None:
    ok(home, "Set-PopSettings", "-ExternalConnectionSetting", "{Dublin01.Contoso.com:995:SSL}")
    assert pop(home)["ExternalConnectionSettings"] == ["Dublin01.Contoso.com:995:SSL"]
    ok(
        home,
        "Set-ImapSettings",
        "-ExternalConnectionSettings",
        "{mail.contoso.com:993:SSL}",
        "-LoginType",
        "PlainTextLogin",
    )
    assert imap(home)["LoginType"] == "PlainTextLogin"
    ok(
        home,
        "Set-ReceiveConnector",
        "Client Frontend MBX01",
        "-AdvertiseClientSettings",
        "$true",
        "-FQDN",
        "Dublin01.Contoso.com",
    )
    conn = store.load(home).settings.ReceiveConnectors["Client Frontend MBX01"]
    assert conn.AdvertiseClientSettings is True and conn.Fqdn == "Dublin01.Contoso.com"
    ok(home, "Set-Service", "MSExchangePOP3", "-StartupType", "Automatic")
    assert store.load(home).settings.Servers["MBX01"].Services["MSExchangePOP3"] == "Automatic"
    ok(home, "New-Mailbox", "alice", "--password-stdin", stdin="pw\n")
    ok(home, "Set-CASMailbox", "alice", "-PopEnabled", "$false")
    assert store.load(home).settings.Mailboxes["alice"].PopEnabled is False


@pytest.mark.parametrize(
    "args",
    [
        ["SET-POPSETTINGS", "-logintype", "plaintextlogin"],
        ["set-popsettings", "-LoginType:PlainTextLogin"],
        ["Set-PopSettings", "-Login", "1"],
        ["Set-PopSettings", "--login-type", "PlainTextLogin"],
        ["set-popsettings", "--login-type=plaintextlogin"],
    ],
)
def test_names_and_values_are_case_insensitive_and_prefixes_work(
    home: Home, args: list[str]
) -> None:
    ok(home, *args)
    assert pop(home)["LoginType"] == "PlainTextLogin"


@pytest.mark.parametrize(
    "words",
    [
        ["{a.contoso.com:995:SSL,b.contoso.com:110:TLS}"],
        ["a.contoso.com:995:SSL,b.contoso.com:110:TLS"],
        ["a.contoso.com:995:SSL", "b.contoso.com:110:TLS"],  # bash brace expansion
        ["a.contoso.com:995:SSL,", "b.contoso.com:110:TLS"],  # `a, b`
        ['@("a.contoso.com:995:SSL","b.contoso.com:110:TLS")'],
    ],
)
def test_multi_valued_spellings(home: Home, words: list[str]) -> None:
    ok(home, "Set-PopSettings", "-ExternalConnectionSettings", *words, "-LoginType", "1")
    shown = pop(home)
    assert shown["ExternalConnectionSettings"] == ["a.contoso.com:995:SSL", "b.contoso.com:110:TLS"]
    assert shown["LoginType"] == "PlainTextLogin"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["$True"], True),
        (["'$true'"], None),  # quotes kept by the shell are not a value we guess at
        (["$false"], False),
        ([":$false"], False),
        ([], None),  # bash removed an unquoted $false or $true: refused, not guessed
        (["false"], False),
    ],
)
def test_boolean_spellings(home: Home, words: list[str], expected: bool | None) -> None:
    if words and words[0].startswith(":"):
        args = ["-ProtocolLogEnabled" + words[0]]
    else:
        args = ["-ProtocolLogEnabled", *words]
    result = mailctl(home, "Set-PopSettings", *args)
    if expected is None:
        assert result.code == 2
        return
    assert result.code == 0, result.err
    assert pop(home)["ProtocolLogEnabled"] is expected


def test_empty_boolean_from_double_quoted_false_is_refused(home: Home) -> None:
    result = mailctl(home, "Set-CASMailbox", "demo", "-PopEnabled", "")
    assert result.code == 2


def test_identity_as_named_parameter(home: Home) -> None:
    ok(
        home,
        "Set-ReceiveConnector",
        "-Identity",
        "MBX01\\Client Frontend MBX01",
        "-Banner",
        "220 hi",
    )
    rows = ok(home, "Get-ReceiveConnector", "-Identity", "Client Frontend*", "-o", "json").json()
    assert [r["Banner"] for r in rows] == ["220 hi"]


def test_common_parameters_are_ignored(home: Home) -> None:
    ok(home, "Set-PopSettings", "-LoginType", "1", "-Confirm:$false", "-Verbose")
    ok(home, "Get-PopSettings", "-DomainController", "dc01", "-o", "json")


def test_format_list_with_properties(home: Home) -> None:
    result = ok(
        home,
        "Get-ImapSettings",
        "|",
        "Format-List",
        "*ConnectionSettings,*Bindings,X509CertificateName",
    )
    keys = [line.split(":")[0].strip() for line in result.out.splitlines() if line.strip()]
    assert keys == [
        "ExternalConnectionSettings",
        "InternalConnectionSettings",
        "SSLBindings",
        "UnencryptedOrTLSBindings",
        "X509CertificateName",
    ]


def test_pipeline_get_to_set(home: Home) -> None:
    ok(
        home,
        "Get-ReceiveConnector",
        "Client*",
        "|",
        "Set-ReceiveConnector",
        "-MaxLogonFailures",
        "5",
    )
    settings = store.load(home).settings
    assert {c.MaxLogonFailures for c in settings.ReceiveConnectors.values()} == {5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Get-ServerComponentState", "MBX01", "-Component", "PopProxy"], "not supported here"),
        (["iisreset"], "not supported here"),
        (["Set-PopSetings", "-LoginType", "1"], "did you mean Set-PopSettings?"),
        (["Set-PopSettings", "-LoginType"], "needs a value"),
    ],
)
def test_usage_errors_exit_2(home: Home, args: list[str], message: str) -> None:
    result = mailctl(home, *args)
    assert result.code == 2 and message in result.err, result.err


def test_output_formats(home: Home) -> None:
    table = ok(home, "get-mailbox").out
    assert "demo" in table or "(none)" in table
    as_json = ok(home, "Get-Mailbox", "-Output", "json").out
    assert isinstance(json.loads(as_json), list)
    result = mailctl(home, "get-popsettings", "--output", "yaml")
    assert result.code == 2 and "table, list, json" in result.err


@pytest.mark.parametrize(
    "args",
    [
        # bash removed an unquoted $false: guessing "true" would switch POP3 on
        ["Set-CASMailbox", "alice", "-PopEnabled"],
        ["Set-CASMailbox", "alice", "-PopEnabled", "-ImapEnabled", "true"],
        ["set-casmailbox", "alice", "--pop-enabled"],
        [
            "Set-ReceiveConnector",
            "Client Frontend MBX01",
            "-AdvertiseClientSettings",
            "-Fqdn",
            "x.test",
        ],
    ],
)
def test_a_boolean_without_a_value_is_refused(home: Home, args: list[str]) -> None:
    ok(home, "New-Mailbox", "alice", "--password-stdin", stdin="pw\n")
    before = home.settings_file.read_bytes()
    result = mailctl(home, *args)
    assert result.code == 2, result
    assert "'$false' in single quotes" in result.err and "Traceback" not in result.err
    assert home.settings_file.read_bytes() == before
    assert store.load(home).settings.Mailboxes["alice"].PopEnabled is True


def test_real_switches_stand_alone(home: Home) -> None:
    result = ok(home, "Set-PopSettings", "-LoginType", "PlainTextLogin", "-WhatIf", "-Confirm")
    assert pop(home)["LoginType"] != "PlainTextLogin", result


def test_the_off_side_of_an_on_off_switch_stays_off(tmp_path: Path) -> None:
    # `init --no-demo` once reached typer as --demo: the translator named the switch by its
    # first spelling whichever was given.
    home = Home.resolve(tmp_path / "nodemo")
    ok(home, "init", "--no-demo", "--base-port", "20000")
    assert store.load(home).settings.Mailboxes == {}
    other = Home.resolve(tmp_path / "demo")
    ok(other, "init", "--demo", "--base-port", "20000", "--demo-password", "Demo-pass-1")
    assert "demo" in store.load(other).settings.Mailboxes
