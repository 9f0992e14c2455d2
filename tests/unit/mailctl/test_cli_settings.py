"""Get-/Set-PopSettings and Get-/Set-ImapSettings: every parameter round-trips in both
spellings, defaults are the reference's, bad values exit 2 and leave the file untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailctl.cli import kebab
from server.settings import store
from server.settings.models import ImapSettings, PopSettings, default_settings
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

MODELS = {"pop": PopSettings, "imap": ImapSettings}
CMDLETS = {"pop": "PopSettings", "imap": "ImapSettings"}

# parameter -> (what the admin types, what get- shows); none of them is the default.
SAMPLES: dict[str, tuple[str, object]] = {
    "AuthenticatedConnectionTimeout": ("00:10:00", "00:10:00"),
    "PreAuthenticatedConnectionTimeout": ("90", "00:01:30"),
    "Banner": ("Welcome to Contoso mail", "Welcome to Contoso mail"),
    "CalendarItemRetrievalOption": ("custom", "Custom"),
    "OwaServerUrl": ("https://OwaServer01", "https://OwaServer01"),
    "EnableExactRFC822Size": ("$true", True),
    "EnableGSSAPIAndNTLMAuth": ("$false", False),
    "EnforceCertificateErrors": ("1", True),
    "ExtendedProtectionPolicy": ("require", "Require"),
    "ExternalConnectionSettings": (
        "{mail.contoso.com:993:SSL,mail.contoso.com:143:TLS}",
        ["mail.contoso.com:993:SSL", "mail.contoso.com:143:TLS"],
    ),
    "InternalConnectionSettings": ("mbx01.contoso.test:1234:", ["mbx01.contoso.test:1234:"]),
    "SSLBindings": ("{0.0.0.0:1993,[::]:1993}", ["0.0.0.0:1993", "[::]:1993"]),
    "UnencryptedOrTLSBindings": ("127.0.0.2:1143", ["127.0.0.2:1143"]),
    "X509CertificateName": ("mail.contoso.com", "mail.contoso.com"),
    "LoginType": ("1", "PlainTextLogin"),
    "MaxConnections": ("500", 500),
    "MaxConnectionFromSingleIP": ("20", 20),
    "MaxConnectionsPerUser": ("4", 4),
    "MessageRetrievalMimeFormat": ("TextOnly", "TextOnly"),
    "SuppressReadReceipt": ("true", True),
    "ProtocolLogEnabled": ("$True", True),
    "LogFileLocation": ("/var/log/mailctl-proto", "/var/log/mailctl-proto"),
    "LogFileRollOverSettings": ("hourly", "Hourly"),
    "LogPerFileSizeQuota": ("2MB", "2 MB"),
    "ProxyTargetPort": ("2995", 2995),
    "DomainController": ("dc01.contoso.com", "dc01.contoso.com"),
    "WorkerProcesses": ("0", 0),
    "BackEndWorkerProcesses": ("3", 3),
    "MaxCommandSize": ("1000", 1000),  # inside both ranges? no: see PER_PROTOCOL
    "MessageRetrievalSortOrder": ("Descending", "Descending"),
    "ShowHiddenFoldersEnabled": ("$true", True),
}
PER_PROTOCOL = {("imap", "MaxCommandSize"): ("2048", 2048)}


def sample(protocol: str, field: str) -> tuple[str, object]:
    return PER_PROTOCOL.get((protocol, field), SAMPLES[field])


def get(home: Home, protocol: str) -> dict[str, object]:
    return ok(home, f"get-{protocol}settings", "--output", "json").json()


def with_certificate(home: Home) -> None:
    """X509CertificateName must name a certificate: the sample's."""
    from server.runtime import tls

    tls.new_certificate(home, "mail.contoso.com", ["mail.contoso.com"])


@pytest.mark.parametrize("protocol", ["pop", "imap"])
def test_samples_cover_every_parameter(protocol: str) -> None:
    assert set(MODELS[protocol].model_fields) <= set(SAMPLES)


@pytest.mark.parametrize("spelling", ["kebab", "exchange"])
@pytest.mark.parametrize("protocol", ["pop", "imap"])
def test_every_parameter_round_trips(home: Home, protocol: str, spelling: str) -> None:
    with_certificate(home)
    fields = list(MODELS[protocol].model_fields)
    before = get(home, protocol)
    args: list[str] = []
    for field in fields:
        typed = sample(protocol, field)[0]
        args += [f"--{kebab(field)}", typed] if spelling == "kebab" else [f"-{field}", typed]
    verb = f"set-{protocol}settings" if spelling == "kebab" else f"Set-{CMDLETS[protocol]}"
    ok(home, verb, *args)
    after = get(home, protocol)
    for field in fields:
        assert after[field] == sample(protocol, field)[1], field
        assert after[field] != before[field], f"{field}: sample equals the default"


@pytest.mark.parametrize("protocol", ["pop", "imap"])
def test_each_parameter_alone_in_exchange_spelling(home: Home, protocol: str) -> None:
    with_certificate(home)
    for field in MODELS[protocol].model_fields:
        if field == "CalendarItemRetrievalOption":
            continue  # Custom needs OwaServerUrl: covered with it above
        typed, shown = sample(protocol, field)
        ok(home, f"Set-{CMDLETS[protocol]}", f"-{field.upper()}:{typed}")
        assert get(home, protocol)[field] == shown, field


def test_defaults_equal_the_reference(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    store.create(home, default_settings())  # Exchange's own ports, as a root install has
    fqdn = "mbx01.contoso.test"
    common = {
        "AuthenticatedConnectionTimeout": "00:30:00",
        "PreAuthenticatedConnectionTimeout": "00:01:00",
        "CalendarItemRetrievalOption": "iCalendar",
        "OwaServerUrl": None,
        "EnableExactRFC822Size": False,
        "EnableGSSAPIAndNTLMAuth": True,
        "EnforceCertificateErrors": False,
        "ExtendedProtectionPolicy": "None",
        "ExternalConnectionSettings": [],
        "LoginType": "SecureLogin",
        "MaxConnections": 2147483647,
        "MaxConnectionFromSingleIP": 2147483647,
        "MaxConnectionsPerUser": 16,
        "MessageRetrievalMimeFormat": "BestBodyFormat",
        "SuppressReadReceipt": False,
        "ProtocolLogEnabled": False,
        "LogFileRollOverSettings": "Daily",
        "LogPerFileSizeQuota": "0 B",
        "DomainController": None,
        "WorkerProcesses": 1,
        "BackEndWorkerProcesses": 1,
    }
    pop = {
        **common,
        "Banner": "The Microsoft Exchange POP3 service is ready.",
        "MaxCommandSize": 512,
        "MessageRetrievalSortOrder": "Ascending",
        "ProxyTargetPort": 1995,
        "SSLBindings": ["[::]:995", "0.0.0.0:995"],
        "UnencryptedOrTLSBindings": ["[::]:110", "0.0.0.0:110"],
        "InternalConnectionSettings": [f"{fqdn}:995:SSL", f"{fqdn}:110:TLS"],
    }
    imap = {
        **common,
        "Banner": "The Microsoft Exchange IMAP4 service is ready.",
        "MaxCommandSize": 10240,
        "ShowHiddenFoldersEnabled": False,
        "ProxyTargetPort": 1993,
        "SSLBindings": ["[::]:993", "0.0.0.0:993"],
        "UnencryptedOrTLSBindings": ["[::]:143", "0.0.0.0:143"],
        "InternalConnectionSettings": [f"{fqdn}:993:SSL", f"{fqdn}:143:TLS"],
    }
    for protocol, expected in (("pop", pop), ("imap", imap)):
        shown = get(home, protocol)
        for key, value in expected.items():
            assert shown[key] == value, (protocol, key)


BAD = [
    ("Set-PopSettings", "-MaxCommandSize", "5000", "40 to 1024"),
    ("Set-PopSettings", "-MaxCommandSize", "39", "40 to 1024"),
    ("Set-ImapSettings", "-MaxCommandSize", "512", "1024 to 16384"),
    ("Set-ImapSettings", "-LoginType", "Kerberos", "PlainTextLogin (1)"),
    ("Set-PopSettings", "-LoginType", "7", "SecureLogin (3)"),
    ("Set-PopSettings", "-AuthenticatedConnectionTimeout", "02:00:00", "00:00:30 to 1:00:00"),
    ("Set-ImapSettings", "-PreAuthenticatedConnectionTimeout", "00:00:10", "00:00:30 to 1:00:00"),
    ("Set-PopSettings", "-ProxyTargetPort", "70000", "1 to 65535"),
    ("Set-PopSettings", "-MaxConnections", "0", "1 to 2147483647"),
    ("Set-ImapSettings", "-ExternalConnectionSettings", "mail.contoso.com:993:SSH", "SSL, TLS"),
    ("Set-ImapSettings", "-SSLBindings", "1.2.3:993", "[IPv6]:port"),
    ("Set-PopSettings", "-LogPerFileSizeQuota", "lots", "36MB"),
    ("Set-PopSettings", "-EnableExactRFC822Size", "maybe", "$true, $false"),
    ("set-imapsettings", "--message-retrieval-mime-format", "Rtf", "BestBodyFormat (5)"),
]


@pytest.mark.parametrize(("cmdlet", "param", "value", "allowed"), BAD)
def test_bad_value_exits_2_and_changes_nothing(
    home: Home, cmdlet: str, param: str, value: str, allowed: str
) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, cmdlet, param, value)
    assert result.code == 2
    assert param.lstrip("-").replace("-", "").lower() in result.err.replace("-", "").lower()
    assert value in result.err and allowed in result.err
    assert "allowed" in result.err or "write" in result.err
    assert result.err.count("\n") == 1  # one sentence, no traceback
    assert home.settings_file.read_bytes() == before


def test_cross_field_rule_exits_2(home: Home) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, "Set-PopSettings", "-CalendarItemRetrievalOption", "Custom")
    assert result.code == 2 and "OwaServerUrl" in result.err
    assert home.settings_file.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["Set-PopSettings", "-MaxComandSize", "5"], "did you mean -MaxCommandSize?"),
        (["Set-ImapSettings", "-LogniType", "1"], "did you mean -LoginType?"),
        (["set-popsettings", "--bannr", "x"], "did you mean -Banner?"),
        (["Set-PopSettings", "-Max", "5"], "ambiguous"),
    ],
)
def test_unknown_parameter_suggests_the_closest(home: Home, args: list[str], hint: str) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, *args)
    assert result.code == 2 and hint in result.err
    assert home.settings_file.read_bytes() == before


def test_what_if_writes_nothing(home: Home) -> None:
    before = home.settings_file.read_bytes()
    result = ok(home, "Set-ImapSettings", "-LoginType", "PlainTextLogin", "-WhatIf")
    assert "What if" in result.out and "PlainTextLogin" in result.out
    assert home.settings_file.read_bytes() == before


def test_windows_only_parameters_are_marked(home: Home) -> None:
    shown = ok(home, "get-popsettings", "--output", "list").out
    for name in ("EnableGSSAPIAndNTLMAuth", "ExtendedProtectionPolicy", "DomainController"):
        line = next(x for x in shown.splitlines() if x.startswith(name))
        assert "no effect here" in line
    assert "no effect here" not in next(x for x in shown.splitlines() if x.startswith("LoginType"))


def test_server_selects_and_unknown_server_fails(home: Home) -> None:
    assert get(home, "pop")["Server"] == "MBX01"
    assert ok(home, "Get-PopSettings", "-Server", "mbx01", "-o", "json").json()["Server"] == "MBX01"
    result = mailctl(home, "Set-PopSettings", "-Server", "MBX09", "-LoginType", "1")
    assert result.code == 2 and "MBX09" in result.err and "MBX01" in result.err


def _binding(home: Home, service: str, field: str) -> str:
    server = store.load(home).settings.Servers["MBX01"]
    return str(getattr(getattr(server, service), field)[0])


@pytest.mark.parametrize(
    ("cmdlet", "args"),
    [
        # POP3's SSL binding, given to IMAP4: the reload would fail with "Address in use"
        ("Set-ImapSettings", lambda h: ["-SSLBindings", _binding(h, "PopSettings", "SSLBindings")]),
        # the same endpoint twice in one service
        (
            "Set-PopSettings",
            lambda h: ["-SSLBindings", _binding(h, "PopSettings", "UnencryptedOrTLSBindings")],
        ),
        # a wildcard takes the port on every address of its family
        (
            "Set-ImapSettings",
            lambda h: [
                "-UnencryptedOrTLSBindings",
                "0.0.0.0:" + _binding(h, "PopSettings", "SSLBindings").rsplit(":", 1)[1],
            ],
        ),
        # the back end's port
        (
            "Set-ImapSettings",
            lambda h: [
                "-SSLBindings",
                "127.0.0.1:{}".format(store.load(h).settings.Servers["MBX01"].ImapBackEndSSLPort),
            ],
        ),
        # the submission connector's
        (
            "Set-PopSettings",
            lambda h: [
                "-SSLBindings",
                str(store.load(h).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0]),
            ],
        ),
    ],
)
def test_bindings_that_collide_with_another_listener_are_refused(
    home: Home, cmdlet: str, args
) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, cmdlet, *args(home))
    assert result.code == 2, result
    assert "collides with" in result.err and "left unchanged" in result.err
    assert "Traceback" not in result.err
    assert home.settings_file.read_bytes() == before


def test_ipv6_wildcard_and_ipv4_share_a_port(home: Home) -> None:
    port = _binding(home, "ImapSettings", "SSLBindings").rsplit(":", 1)[1]
    ok(home, "Set-ImapSettings", "-SSLBindings", f"[::]:{port}", f"127.0.0.1:{port}")


@pytest.mark.parametrize("banner", ["hi\r\n+OK evil", "a\nb", "tab\there", "bell\x07", "nul\x00"])
@pytest.mark.parametrize("cmdlet", ["Set-PopSettings", "Set-ImapSettings"])
def test_banner_with_a_line_break_or_control_character_is_refused(
    home: Home, cmdlet: str, banner: str
) -> None:
    before = home.settings_file.read_bytes()
    result = mailctl(home, cmdlet, "-Banner", banner)
    assert result.code == 2, result
    assert "one line of printable ASCII" in result.err and "\n" not in result.err.rstrip("\n")
    assert home.settings_file.read_bytes() == before


@pytest.mark.parametrize("cleared", ["$null", "$NULL", ""])
def test_banner_null_gives_the_default_back(home: Home, cleared: str) -> None:
    ok(home, "Set-PopSettings", "-Banner", "Welcome")
    ok(home, "Set-ImapSettings", "-Banner", "Welcome")
    ok(home, "Set-PopSettings", "-Banner", cleared)
    ok(home, "Set-ImapSettings", "-Banner", cleared)
    server = store.load(home).settings.Servers["MBX01"]
    assert server.PopSettings.Banner == "The Microsoft Exchange POP3 service is ready."
    assert server.ImapSettings.Banner == "The Microsoft Exchange IMAP4 service is ready."
