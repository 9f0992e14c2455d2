"""The LDAP directory's attribute mapping (server/directory/ldap.py): AD-style proxyAddresses,
home-server values, entries to mailboxes and back, filters, and the [Directory] settings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.directory import Directory, DirectoryUnavailable, find_entry
from server.directory.ldap import (
    entry_to_mailbox,
    identity_filter,
    mailbox_to_attrs,
    server_name,
    smtp_addresses,
    unmapped_fields,
)
from server.settings.models import DirectoryMapping, DirectorySettings, Mailbox, default_settings
from server.settings.paths import Home
from server.settings.types import MailboxType

AD = DirectoryMapping(
    Name="sAMAccountName",
    LoginNames=["userPrincipalName"],
    PrimarySmtpAddress="",
    EmailAddresses="proxyAddresses",
    Server="msExchHomeServerName",
    Type="",
    PopEnabled="",
    ImapEnabled="",
    UseDatabaseQuotaDefaults="mDBUseDefaults",
    IssueWarningQuota="mDBStorageQuota",
    ProhibitSendQuota="mDBOverQuotaLimit",
    ProhibitSendReceiveQuota="mDBOverHardQuotaLimit",
    QuotaUnit=1024,
    Password="",
    ObjectClasses=["user"],
    Filter="(&(objectClass=user)(proxyAddresses=*))",
)


def test_proxy_addresses_primary_is_upper_case_smtp_and_other_types_are_left_out() -> None:
    primary, addresses = smtp_addresses(
        [
            "smtp:al@contoso.test",
            "X500:/o=Contoso/ou=Exchange/cn=Recipients/cn=alice",
            "SMTP:Alice@Contoso.test",
            "SIP:alice@contoso.test",
            "smtp:AL@contoso.test",
        ]
    )
    assert primary == "Alice@Contoso.test"
    assert addresses == ["al@contoso.test", "Alice@Contoso.test"]  # the duplicate once


def test_plain_values_are_addresses() -> None:
    assert smtp_addresses(["bob@contoso.test", " b@contoso.test "]) == (
        None,
        ["bob@contoso.test", "b@contoso.test"],
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("MBX01", "MBX01"),
        (
            "/o=First Organization/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
            "/cn=Configuration/cn=Servers/cn=MBX02",
            "MBX02",
        ),
        ("CN=MBX03,CN=Servers,CN=Exchange Administrative Group,DC=contoso,DC=test", "MBX03"),
    ],
)
def test_home_server_values(value: str, expected: str) -> None:
    assert server_name(value) == expected


def test_an_active_directory_user_becomes_a_mailbox() -> None:
    attrs = {
        "samaccountname": ["alice"],
        "userprincipalname": ["alice@corp.contoso.test"],
        "proxyaddresses": ["SMTP:alice@contoso.test", "smtp:al@contoso.test", "X500:/o=x"],
        "displayname": ["Alice Liddell"],
        "msexchhomeservername": ["/o=Contoso/ou=AG/cn=Configuration/cn=Servers/cn=MBX01"],
        "mdbusedefaults": ["FALSE"],
        "mdbstoragequota": ["1024"],
        "mdboverhardquotalimit": ["2097152"],
    }
    name, box = entry_to_mailbox(attrs, AD, "MBX09")  # type: ignore[misc]
    assert name == "alice"
    assert box.PrimarySmtpAddress == "alice@contoso.test"
    assert box.EmailAddresses == ["al@contoso.test"]
    assert box.DisplayName == "Alice Liddell" and box.Server == "MBX01"
    assert box.UseDatabaseQuotaDefaults is False
    assert box.IssueWarningQuota.bytes == 1024 * 1024  # KB in AD
    assert box.ProhibitSendReceiveQuota.bytes == 2 * 1024**3
    assert box.ProhibitSendQuota.bytes is None
    assert box.Type is MailboxType.User and box.ImapEnabled and box.PopEnabled


def test_defaults_without_server_or_switches_and_entries_that_are_no_mailbox() -> None:
    mapping = DirectoryMapping()
    name, box = entry_to_mailbox(
        {
            "uid": ["bob"],
            "mail": ["bob@contoso.test"],  # type: ignore[misc]
            "mailctlimapenabled": ["FALSE"],
        },
        mapping,
        "MBX01",
    )
    assert (name, box.Server, box.ImapEnabled, box.PopEnabled) == ("bob", "MBX01", False, True)
    assert entry_to_mailbox({"uid": ["nomail"]}, mapping, "MBX01") is None
    assert entry_to_mailbox({"mail": ["x@contoso.test"]}, mapping, "MBX01") is None
    with pytest.raises(ValueError):
        entry_to_mailbox(
            {"uid": ["b"], "mail": ["b@c.test"], "mailctltype": ["Boss"]}, mapping, "MBX01"
        )


def test_a_mailbox_written_and_read_back_is_the_same() -> None:
    box = Mailbox(
        PrimarySmtpAddress="carol@contoso.test",
        Server="MBX01",
        EmailAddresses=["carol@contoso.test", "c@contoso.test"],
        DisplayName="Carol",
        Type="Guest",
        PopEnabled=False,
        UseDatabaseQuotaDefaults=False,
        ProhibitSendQuota="1 GB",
        ProhibitSendReceiveQuota="Unlimited",
    )
    for mapping in (DirectoryMapping(), AD):
        attrs = {k.lower(): v for k, v in mailbox_to_attrs(box, mapping).items()}
        attrs[mapping.Name.lower()] = ["carol"]
        name, back = entry_to_mailbox(attrs, mapping, "MBX01")  # type: ignore[misc]
        assert name == "carol" and back.PrimarySmtpAddress == box.PrimarySmtpAddress
        assert back.EmailAddresses == ["c@contoso.test"]
        assert back.ProhibitSendQuota == box.ProhibitSendQuota
        assert back.ProhibitSendReceiveQuota.bytes is None
        if mapping is AD:
            assert attrs["proxyaddresses"] == ["SMTP:carol@contoso.test", "smtp:c@contoso.test"]
        else:
            assert back.Type is MailboxType.Guest and back.PopEnabled is False
            assert attrs["mailctlpopenabled"] == ["FALSE"]


def test_identity_filter_escapes_and_covers_every_login_name() -> None:
    text = identity_filter("CONTOSO\\a*(b)", AD)
    assert "a\\2a\\28b\\29" in text and "CONTOSO" not in text
    assert "(userPrincipalName=a\\2a\\28b\\29)" in text
    assert "(proxyAddresses=smtp:a\\2a\\28b\\29)" in text
    assert text.startswith("(&(&(objectClass=user)(proxyAddresses=*))(|")


def test_unmapped_fields_are_named() -> None:
    assert unmapped_fields(AD, ["PopEnabled", "DisplayName", "ImapUseProtocolDefaults"]) == [
        "PopEnabled",
        "ImapUseProtocolDefaults",
    ]


def test_directory_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="BaseDN"):
        DirectorySettings(Uri="ldap://127.0.0.1:1")
    with pytest.raises(ValidationError, match="Hash or Bind"):
        DirectorySettings(Uri="ldap://127.0.0.1:1", BaseDN="dc=x", LoginVerification="Kerberos")
    assert default_settings().Directory is None  # the file directory stays the default


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_directory_is_unavailable_not_unknown(tmp_path: Path) -> None:
    """A login against a directory nobody answers must not look like a wrong password."""
    home = Home.resolve(tmp_path / "home")
    settings = default_settings()
    settings.Directory = DirectorySettings(
        Uri=f"ldap://127.0.0.1:{_closed_port()}",
        BaseDN="ou=people,dc=contoso,dc=test",
        ConnectTimeout=1,
        OperationTimeout=1,
    )
    with pytest.raises(DirectoryUnavailable):
        Directory(home).verify(settings, "alice", "x")
    with pytest.raises(DirectoryUnavailable):
        find_entry(settings, "alice", home)


def test_ldaps_checks_the_directory_certificate(tmp_path: Path) -> None:
    import ssl

    from server.directory.ldap import LdapDirectory

    client = LdapDirectory(
        DirectorySettings(Uri="ldaps://dc01.contoso.test", BaseDN="dc=x"), tmp_path
    )
    assert client._server().tls.validate == ssl.CERT_REQUIRED
    with pytest.raises(ValidationError, match="ldap://"):
        DirectorySettings(Uri="http://dc01", BaseDN="dc=x")
