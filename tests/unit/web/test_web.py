"""The web service's pure parts: who is internal, what is shown, signed sessions, and the
autoconfig / autodiscover / mobileconfig documents checked against their formats."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from server.settings.models import Settings, default_settings
from server.settings.paths import Home
from server.settings.types import (
    AuthMechanism,
    ConnectionSetting,
    Encryption,
    IPEndPoint,
)
from server.web import autoconfig, autodiscover, mobileconfig
from server.web.session import RevokedSessions, SessionSigner
from server.web.view import client_view, is_internal, ordered

A = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUT = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQ = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


def published_settings(
    pop: list[str] | None = None,
    imap: list[str] | None = None,
    smtp: bool = True,
    internal_pop: list[str] | None = None,
) -> Settings:
    settings = default_settings()
    server = settings.Servers["MBX01"]
    server.PopSettings.ExternalConnectionSettings = pop or []
    server.ImapSettings.ExternalConnectionSettings = imap or []
    if internal_pop is not None:
        server.PopSettings.InternalConnectionSettings = internal_pop
    conn = settings.ReceiveConnectors["Client Frontend MBX01"]
    conn.AdvertiseClientSettings = smtp
    conn.Fqdn = "smtp.contoso.com"
    conn.Bindings = [IPEndPoint("0.0.0.0", 587)]
    return settings


FULL = dict(
    pop=["mail.contoso.com:110:TLS", "mail.contoso.com:995:SSL"],
    imap=["mail.contoso.com:993:SSL", "mail.contoso.com:143:TLS"],
)


# --------------------------------------------------------------------------- view


@pytest.mark.parametrize(
    ("networks", "remote", "expected"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.1.2.3", False),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),
        (["fd00::/8"], "fd12::1", True),
        (["fd00::/8"], "10.1.2.3", False),
        (["192.168.1.7"], "192.168.1.7", True),
        (["not a network", "127.0.0.0/8"], "127.0.0.1", True),
        (["not a network"], "127.0.0.1", False),
        ([], "10.1.2.3", False),
        (["10.0.0.0/8"], None, False),
        (["10.0.0.0/8"], "garbage", False),
    ],
)
def test_internal_is_decided_by_the_peer_address(
    networks: list[str], remote: str | None, expected: bool
) -> None:
    assert is_internal(networks, remote) is expected


def test_ssl_wins_over_tls_and_nothing_set_is_not_published() -> None:
    settings = published_settings(pop=FULL["pop"], smtp=False)
    view = client_view(settings, "MBX01", internal=False)
    assert view.shown.POP is not None and view.shown.POP.Port == 995
    assert view.shown.POP.Encryption == "SSL"
    assert view.shown.IMAP is None and view.shown.SMTP is None
    assert [e.Port for e in view.pop_all] == [995, 110]


def test_internal_clients_see_internal_settings_falling_back_to_external() -> None:
    settings = published_settings(
        pop=["mail.contoso.com:995:SSL"],
        imap=["mail.contoso.com:993:SSL"],
        internal_pop=["mbx01.corp.local:110:TLS"],
    )
    settings.Servers["MBX01"].ImapSettings.InternalConnectionSettings = []
    inside = client_view(settings, "MBX01", internal=True)
    outside = client_view(settings, "MBX01", internal=False)
    assert inside.shown.POP is not None and inside.shown.POP.Server == "mbx01.corp.local"
    assert inside.shown.IMAP == outside.shown.IMAP  # nothing internal for IMAP: external
    assert outside.shown.POP is not None and outside.shown.POP.Server == "mail.contoso.com"
    assert inside.shown.SMTP == outside.shown.SMTP


def test_default_install_publishes_nothing_externally() -> None:
    view = client_view(default_settings(), "MBX01", internal=False)
    assert not view.anything and not view.pop_all and not view.imap_all


def test_ordered_keeps_the_admins_order_within_a_kind() -> None:
    entries = [
        ConnectionSetting("b", 2, None),
        ConnectionSetting("a", 1, Encryption.TLS),
        ConnectionSetting("c", 3, Encryption.SSL),
        ConnectionSetting("d", 4, Encryption.SSL),
    ]
    assert [e.Server for e in ordered(entries)] == ["c", "d", "a", "b"]


# --------------------------------------------------------------------------- sessions


def test_session_round_trip_tamper_and_expiry() -> None:
    now = [1000.0]
    signer = SessionSigner(b"k" * 32, max_age=60, clock=lambda: now[0])
    token = signer.issue("alice")
    assert signer.check(token) == "alice"
    payload, sig = token.split(".")
    assert signer.check(payload + "." + sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")) is None
    assert SessionSigner(b"x" * 32, clock=lambda: now[0]).check(token) is None
    assert signer.check(None) is None and signer.check("") is None and signer.check("a.b.c") is None
    now[0] += 61
    assert signer.check(token) is None


def test_session_revocation_and_password_fingerprint(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    hashes = {"alice": "$argon2id$one"}
    signer = SessionSigner(b"k" * 32, password_hash=hashes.get, revoked=RevokedSessions(home))
    kept, signed_out = signer.issue("alice"), signer.issue("alice")
    signer.revoke(signed_out)
    assert signer.check(kept) == "alice" and signer.check(signed_out) is None
    # a restart (new objects, same home) still knows the signed-out cookie
    again = SessionSigner(b"k" * 32, password_hash=hashes.get, revoked=RevokedSessions(home))
    assert again.check(signed_out) is None and again.check(kept) == "alice"
    hashes["alice"] = "$argon2id$two"  # the password changed
    assert again.check(kept) is None
    del hashes["alice"]  # or was removed
    assert again.check(again.issue("alice")) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = SessionSigner(b"k" * 32)
    one, two = signer.issue("alice"), signer.issue("alice")
    assert signer.check_csrf(one, signer.csrf_token(one))
    assert not signer.check_csrf(one, signer.csrf_token(two))
    assert not signer.check_csrf(one, None) and not signer.check_csrf(one, "")


# --------------------------------------------------------------------------- autoconfig


def test_autoconfig_follows_thunderbird_config_v1_1() -> None:
    view = client_view(published_settings(**FULL), "MBX01", internal=False)
    root = ET.fromstring(autoconfig.config_xml(view, "contoso.com", "Contoso"))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    [provider] = root.findall("emailProvider")
    assert provider.get("id") == "contoso.com"
    assert provider.findtext("domain") == "contoso.com"
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    incoming = provider.findall("incomingServer")
    got = [(s.get("type"), s.findtext("port"), s.findtext("socketType")) for s in incoming]
    assert got == [
        ("imap", "993", "SSL"),
        ("imap", "143", "STARTTLS"),
        ("pop3", "995", "SSL"),
        ("pop3", "110", "STARTTLS"),
    ]
    [out] = provider.findall("outgoingServer")
    assert out.get("type") == "smtp"
    assert (out.findtext("hostname"), out.findtext("port"), out.findtext("socketType")) == (
        "smtp.contoso.com",
        "587",
        "STARTTLS",
    )
    for server in [*incoming, out]:
        assert [c.tag for c in server][:5] == [
            "hostname",
            "port",
            "socketType",
            "authentication",
            "username",
        ]
        assert server.findtext("authentication") == "password-cleartext"
        assert server.findtext("username") == "%EMAILADDRESS%"


def test_autoconfig_lists_nothing_the_admin_did_not_advertise() -> None:
    view = client_view(
        published_settings(imap=["imap.contoso.com:993:SSL"], smtp=False), "MBX01", internal=False
    )
    provider = ET.fromstring(autoconfig.config_xml(view, "contoso.com", "C")).find("emailProvider")
    assert provider is not None
    assert [s.get("type") for s in provider.findall("incomingServer")] == ["imap"]
    assert provider.findall("outgoingServer") == []


def test_smtp_without_tls_mechanism_is_plain() -> None:
    settings = published_settings(**FULL)
    conn = settings.ReceiveConnectors["Client Frontend MBX01"]
    conn.AuthMechanism = [AuthMechanism.BasicAuth]
    view = client_view(settings, "MBX01", internal=False)
    out = ET.fromstring(autoconfig.config_xml(view, "c.com", "C")).find(
        "emailProvider/outgoingServer"
    )
    assert out is not None and out.findtext("socketType") == "plain"


# --------------------------------------------------------------------------- autodiscover


def request_xml(email: str = "alice@contoso.com", schema: str = OUT) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQ}"><Request>'
        f"<EMailAddress>{email}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def test_autodiscover_response_follows_responseschema_2006a() -> None:
    view = client_view(published_settings(**FULL), "MBX01", internal=False)
    asked = autodiscover.parse_request(request_xml())
    root = ET.fromstring(autodiscover.response_xml(view, asked))
    assert root.tag == f"{{{A}}}Autodiscover"
    [response] = list(root)
    assert response.tag == f"{{{OUT}}}Response"
    account = response.find(f"{{{OUT}}}Account")
    assert account is not None
    assert account.findtext(f"{{{OUT}}}AccountType") == "email"
    assert account.findtext(f"{{{OUT}}}Action") == "settings"
    protocols = {
        p.findtext(f"{{{OUT}}}Type"): {c.tag.split("}")[1]: c.text for c in p}
        for p in account.findall(f"{{{OUT}}}Protocol")
    }
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    imap, pop, smtp = protocols["IMAP"], protocols["POP3"], protocols["SMTP"]
    assert (imap["Server"], imap["Port"], imap["SSL"], imap["Encryption"]) == (
        "mail.contoso.com",
        "993",
        "on",
        "SSL",
    )
    assert (pop["Port"], pop["Encryption"]) == ("995", "SSL")
    assert (smtp["Server"], smtp["Port"], smtp["Encryption"]) == ("smtp.contoso.com", "587", "TLS")
    for proto in protocols.values():
        assert proto["LoginName"] == "alice@contoso.com"
        assert proto["AuthRequired"] == "on" and proto["SPA"] == "off"
        assert list(proto)[:3] == ["Type", "Server", "Port"]


def test_autodiscover_answers_only_what_is_published() -> None:
    view = client_view(
        published_settings(pop=["pop.contoso.com:995:SSL"], smtp=False), "MBX01", internal=False
    )
    root = ET.fromstring(autodiscover.response_xml(view, autodiscover.parse_request(request_xml())))
    types = [t.text for t in root.iter(f"{{{OUT}}}Type")]
    assert types == ["POP3"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<not xml",
        request_xml(email="no-at-sign"),
        request_xml().replace(REQ.encode(), b"urn:other"),
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>' + request_xml()[38:],
        b"<a>" + b"x" * (autodiscover.MAX_REQUEST + 1) + b"</a>",
    ],
)
def test_autodiscover_refuses_bad_requests(body: bytes) -> None:
    with pytest.raises(autodiscover.InvalidRequest):
        autodiscover.parse_request(body)


def test_autodiscover_error_is_code_600() -> None:
    root = ET.fromstring(autodiscover.error_xml())
    assert root.tag == f"{{{A}}}Autodiscover"
    error = root.find(f"{{{A}}}Response/{{{A}}}Error")
    assert error is not None and error.get("Time") and error.get("Id")
    assert error.findtext(f"{{{A}}}ErrorCode") == "600"
    assert error.findtext(f"{{{A}}}Message") == "Invalid Request"


# --------------------------------------------------------------------------- mobileconfig


def test_mobileconfig_is_a_mail_profile_for_the_user() -> None:
    view = client_view(published_settings(**FULL), "MBX01", internal=False)
    data = mobileconfig.profile(view, "alice@contoso.com", "Alice", "contoso.com")
    assert data is not None
    doc = plistlib.loads(data)
    assert doc["PayloadType"] == "Configuration" and doc["PayloadVersion"] == 1
    [mail] = doc["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == (
        "mail.contoso.com",
        993,
    )
    assert mail["IncomingMailServerUseSSL"] is True
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"]) == (
        "smtp.contoso.com",
        587,
    )
    assert mail["IncomingMailServerUsername"] == "alice@contoso.com"
    assert "IncomingPassword" not in mail
    again = plistlib.loads(
        mobileconfig.profile(view, "alice@contoso.com", "Alice", "contoso.com") or b""
    )
    assert again["PayloadUUID"] == doc["PayloadUUID"]  # reinstall replaces, not duplicates


def test_mobileconfig_uses_pop_when_imap_is_not_published_and_needs_smtp() -> None:
    pop_only = client_view(published_settings(pop=["p.contoso.com:995:SSL"]), "MBX01", False)
    data = mobileconfig.profile(pop_only, "a@contoso.com", "", "contoso.com")
    assert data is not None
    assert plistlib.loads(data)["PayloadContent"][0]["EmailAccountType"] == "EmailTypePOP"
    no_smtp = client_view(published_settings(**FULL, smtp=False), "MBX01", False)
    assert mobileconfig.profile(no_smtp, "a@contoso.com", "", "contoso.com") is None


def _with_dtd(declared: str) -> str:
    return (
        f'<?xml version="1.0" encoding="{declared}"?><!DOCTYPE a [<!ENTITY e "bob@x.test">]>'
        f'<Autodiscover xmlns="{REQ}"><Request><EMailAddress>&e;</EMailAddress>'
        f"<AcceptableResponseSchema>{OUT}</AcceptableResponseSchema></Request></Autodiscover>"
    )


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("UTF-16", "utf-16"),
        ("UTF-16BE", "utf-16-be"),
        ("UTF-16LE", "utf-16-le"),
        ("UTF-32", "utf-32"),
        ("UTF-8", "utf-8-sig"),
        ("UTF-8", "utf-8"),
    ],
)
def test_autodiscover_refuses_a_dtd_in_any_encoding(declared: str, codec: str) -> None:
    with pytest.raises(autodiscover.UnreadableRequest):
        autodiscover.parse_request(_with_dtd(declared).encode(codec))


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe<\x00?\x00",
        b'<?xml version="1.0" encoding="x-unknown"?><a/>',
        b'<?xml version="1.0" encoding="utf-8"?><a>\xff</a>',
    ],
)
def test_autodiscover_undecodable_requests_are_unreadable(body: bytes) -> None:
    with pytest.raises(autodiscover.UnreadableRequest):
        autodiscover.parse_request(body)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-16-le", "utf-8-sig"])
def test_autodiscover_reads_requests_in_other_encodings(codec: str) -> None:
    text = request_xml().decode().replace("utf-8", codec.replace("-sig", "").upper())
    asked = autodiscover.parse_request(text.encode(codec))
    assert asked.email == "alice@contoso.com" and asked.schema == OUT
