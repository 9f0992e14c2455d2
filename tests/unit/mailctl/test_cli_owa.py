"""Get-/Set-OwaVirtualDirectory: both spellings, Exchange's Identity forms, -Server, JSON;
bad URLs and networks exit 2 and leave settings.toml untouched."""

from __future__ import annotations

import pytest

from server.settings import store
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok


def owa(home: Home) -> dict[str, object]:
    return store.load(home).settings.Servers["MBX01"].OwaVirtualDirectory.model_dump(mode="json")


def test_get_shows_every_parameter_in_json(home: Home) -> None:
    shown = ok(home, "Get-OwaVirtualDirectory", "-Output", "json").json()
    assert shown["Identity"] == "MBX01\\owa (Default Web Site)"
    assert shown["InternalUrl"] == owa(home)["InternalUrl"]
    assert {"ExternalUrl", "Bindings", "SSLBindings", "InternalNetworks"} <= shown.keys()


@pytest.mark.parametrize(
    "identity",
    [
        ["-Identity", "MBX01\\owa (Default Web Site)"],
        ["mbx01\\OWA (default web site)"],
        ["-Identity", "MBX01\\owa"],
        ["-Identity", "owa (Default Web Site)", "-Server", "MBX01"],
        ["-Server", "mbx01.contoso.test"],
        [],
    ],
)
def test_exchange_spelling_and_identity_forms(home: Home, identity: list[str]) -> None:
    ok(
        home,
        "Set-OwaVirtualDirectory",
        *identity,
        "-ExternalUrl",
        "https://mail.contoso.com/owa",
        "-InternalUrl",
        "https://mbx01.contoso.test/owa",
    )
    assert owa(home)["ExternalUrl"] == "https://mail.contoso.com/owa"
    got = ok(home, "Get-OwaVirtualDirectory", *identity, "-Output", "json").json()
    assert got["ExternalUrl"] == "https://mail.contoso.com/owa"


def test_kebab_spelling_and_networks_canonical(home: Home) -> None:
    ok(home, "set-owavirtualdirectory", "--internal-networks", "{10.1.2.3/8,FD00::/8}")
    assert owa(home)["InternalNetworks"] == ["10.0.0.0/8", "fd00::/8"]
    ok(home, "Set-OwaVirtualDirectory", "-InternalNetworks", '@{Add="192.168.0.0/16"}')
    assert owa(home)["InternalNetworks"] == ["10.0.0.0/8", "fd00::/8", "192.168.0.0/16"]
    ok(home, "set-owavirtualdirectory", "--external-url", "$null")
    assert owa(home)["ExternalUrl"] is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-ExternalUrl", "mail.contoso.com"], "ExternalUrl"),
        (["-ExternalUrl", "https://mail contoso.com/owa"], "ExternalUrl"),
        (["-InternalUrl", "https://mbx01:99999/owa"], "InternalUrl"),
        (["-InternalNetworks", "10.0.0.300/8"], "InternalNetworks"),
        (["-InternalNetworks", "{10.0.0.0/8,intranet}"], "InternalNetworks"),
        (["-Identity", "MBX01\\ecp (Default Web Site)", "-ExternalUrl", "https://a.b/owa"], "ecp"),
        (
            ["-Identity", "MBX01\\owa", "-Server", "MBX02", "-ExternalUrl", "https://a.b/owa"],
            "MBX02",
        ),
        ([], "at least one parameter"),
    ],
)
def test_bad_values_exit_2_and_change_nothing(home: Home, args: list[str], named: str) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, "Set-OwaVirtualDirectory", *args)
    assert result.code == 2, result.err
    assert named in result.err and result.err.count("\n") == 1
    assert home.settings_file.read_bytes() == before


def test_what_if_writes_nothing(home: Home) -> None:
    before = home.settings_file.read_bytes()
    result = ok(home, "Set-OwaVirtualDirectory", "-ExternalUrl", "https://a.b/owa", "-WhatIf")
    assert "What if" in result.out
    assert home.settings_file.read_bytes() == before
