"""mailctl as separate processes: twenty concurrent writers lose no update, and the Exchange
spelling survives a real bash (unquoted $True dropped, brace expansion, quoting)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from server.settings import store
from server.settings.paths import Home

pytestmark = pytest.mark.e2e


def mailctl_argv() -> list[str]:
    script = shutil.which("mailctl")
    return [script] if script else [sys.executable, "-m", "mailctl"]


def env_for(home: Home) -> dict[str, str]:
    return {**os.environ, "MAILCTL_HOME": str(home.root)}


CONCURRENT = [
    ["set-popsettings", "--max-connections", "101"],
    ["set-popsettings", "--max-connections-per-user", "5"],
    ["set-popsettings", "--banner", "POP ready"],
    ["set-popsettings", "--login-type", "PlainTextLogin"],
    ["set-popsettings", "--protocol-log-enabled", "true"],
    ["set-popsettings", "--max-command-size", "600"],
    ["set-popsettings", "--authenticated-connection-timeout", "00:20:00"],
    ["Set-PopSettings", "-SuppressReadReceipt", "$true"],
    ["Set-PopSettings", "-MessageRetrievalSortOrder", "Descending"],
    ["Set-PopSettings", "-ExternalConnectionSettings", "pop.contoso.com:995:SSL"],
    ["set-imapsettings", "--max-connections", "202"],
    ["set-imapsettings", "--max-connections-per-user", "6"],
    ["set-imapsettings", "--banner", "IMAP ready"],
    ["set-imapsettings", "--login-type", "PlainTextAuthentication"],
    ["set-imapsettings", "--show-hidden-folders-enabled", "true"],
    ["Set-ImapSettings", "-MaxCommandSize", "4096"],
    ["Set-ImapSettings", "-ExternalConnectionSettings", "imap.contoso.com:993:SSL"],
    ["Set-ReceiveConnector", "Client Frontend MBX01", "-AdvertiseClientSettings", "$true"],
    ["Set-ReceiveConnector", "Client Proxy MBX01", "-MaxLogonFailures", "9"],
    ["Set-Service", "MSExchangeIMAP4", "-StartupType", "Automatic"],
]


def test_twenty_concurrent_writers_lose_no_update(home: Home) -> None:
    assert len(CONCURRENT) == 20
    procs = [
        subprocess.Popen(
            [*mailctl_argv(), *args],
            env=env_for(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in CONCURRENT
    ]
    for proc, args in zip(procs, CONCURRENT, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (args, err)
    s = store.load(home).settings
    pop, imap = s.Servers["MBX01"].PopSettings, s.Servers["MBX01"].ImapSettings
    assert (pop.MaxConnections, pop.MaxConnectionsPerUser, pop.Banner) == (101, 5, "POP ready")
    assert (pop.LoginType.value, pop.ProtocolLogEnabled, pop.MaxCommandSize) == (
        "PlainTextLogin",
        True,
        600,
    )
    assert str(pop.AuthenticatedConnectionTimeout) == "0:20:00" and pop.SuppressReadReceipt
    assert pop.MessageRetrievalSortOrder.value == "Descending"
    assert [str(c) for c in pop.ExternalConnectionSettings] == ["pop.contoso.com:995:SSL"]
    assert (imap.MaxConnections, imap.MaxConnectionsPerUser, imap.Banner) == (202, 6, "IMAP ready")
    assert imap.LoginType.value == "PlainTextAuthentication" and imap.ShowHiddenFoldersEnabled
    assert imap.MaxCommandSize == 4096
    assert [str(c) for c in imap.ExternalConnectionSettings] == ["imap.contoso.com:993:SSL"]
    assert s.ReceiveConnectors["Client Frontend MBX01"].AdvertiseClientSettings
    assert s.ReceiveConnectors["Client Proxy MBX01"].MaxLogonFailures == 9
    assert s.Servers["MBX01"].Services["MSExchangeIMAP4"].value == "Automatic"


def bash(home: Home, line: str) -> subprocess.CompletedProcess[str]:
    cmd = " ".join(shlex.quote(a) for a in mailctl_argv())
    return subprocess.run(
        ["bash", "-c", line.replace("mailctl ", cmd + " ", 1)],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_exchange_spelling_through_bash(home: Home) -> None:
    lines = [
        "mailctl Set-ReceiveConnector \"Client Frontend MBX01\" -AdvertiseClientSettings '$True' -FQDN Dublin01.Contoso.com",
        # brace expansion splits the list into two words
        "mailctl Set-PopSettings -ExternalConnectionSetting {pop.contoso.com:995:SSL,pop.contoso.com:110:TLS}",
        "mailctl Set-ImapSettings -ExternalConnectionSettings {mail.contoso.com:993:SSL} -LoginType PlainTextLogin",
        "mailctl Set-Service MSExchangePOP3 -StartupType Automatic",
        "echo pw | mailctl New-Mailbox alice --password-stdin",
        "mailctl Set-CASMailbox alice -PopEnabled '$false'",
        "mailctl Set-CASMailbox alice -ImapEnabled:false",
    ]
    for line in lines:
        result = bash(home, line)
        assert result.returncode == 0, (line, result.stderr)
    # bash expands an unquoted $false (and $True) to nothing: refused, never read as true
    before = home.settings_file.read_bytes()
    for line in (
        "mailctl Set-CASMailbox alice -ImapEnabled $true",
        "mailctl Set-CASMailbox alice -PopEnabled $false -ImapEnabled:$false",
    ):
        result = bash(home, line)
        assert result.returncode == 2 and "'$false' in single quotes" in result.stderr, line
    assert home.settings_file.read_bytes() == before
    s = store.load(home).settings
    conn = s.ReceiveConnectors["Client Frontend MBX01"]
    assert conn.AdvertiseClientSettings and conn.Fqdn == "Dublin01.Contoso.com"
    assert [str(c) for c in s.Servers["MBX01"].PopSettings.ExternalConnectionSettings] == [
        "pop.contoso.com:995:SSL",
        "pop.contoso.com:110:TLS",
    ]
    assert s.Servers["MBX01"].ImapSettings.LoginType.value == "PlainTextLogin"
    assert s.Mailboxes["alice"].PopEnabled is False and s.Mailboxes["alice"].ImapEnabled is False
    # a double-quoted "$false" reaches us empty: refused, never read as true
    result = bash(home, 'mailctl Set-CASMailbox alice -PopEnabled "$false"')
    assert result.returncode == 2 and "single quotes" in result.stderr
    result = bash(home, "mailctl Get-PopSettings -Output json")
    assert json.loads(result.stdout)["ExternalConnectionSettings"][0] == "pop.contoso.com:995:SSL"
