"""Exchange value types: what admins type is accepted, stored in Exchange's spelling, and
anything else is a ValueError that says what is allowed (never another exception)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from server.settings import types
from server.settings.models import ImapSettings, PopSettings, default_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:30:00", timedelta(minutes=30)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1800", timedelta(minutes=30)),
        ("0:0:30", timedelta(seconds=30)),
    ],
)
def test_timespans(text: str, expected: timedelta) -> None:
    assert types.parse_timespan(text) == expected


def test_timespan_is_written_back_as_exchange_does() -> None:
    assert types.format_timespan(timedelta(days=1, seconds=5)) == "1.00:00:05"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("36 MB", 36 * 1024**2),
        ("36MB", 36 * 1024**2),
        ("512kb", 512 * 1024),
        ("1,048,576", 1048576),
        ("36 MB (37,748,736 bytes)", 37748736),
        ("unlimited", None),
    ],
)
def test_byte_sizes(text: str, size: int | None) -> None:
    assert types.parse_bytesize(text).bytes == size


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("{a:1:SSL, b:2:TLS}", ["a:1:SSL", "b:2:TLS"]),
        ("a,b", ["a", "b"]),
        ('@("a","b")', ["a", "b"]),
        ("$null", []),
        (["x", "y,z"], ["x", "y", "z"]),
    ],
)
def test_powershell_multivalues(text: object, items: list[str]) -> None:
    assert types.split_multivalue(text) == items


def test_enums_take_names_numbers_and_any_case() -> None:
    assert types.LoginType.parse("plaintextlogin") is types.LoginType.PlainTextLogin
    assert types.LoginType.parse("3") is types.LoginType.SecureLogin
    assert types.MimeTextFormat.parse(5) is types.MimeTextFormat.BestBodyFormat
    with pytest.raises(ValueError, match="allowed: PlainTextLogin \\(1\\)"):
        types.LoginType.parse("Kerberos")


def test_connection_settings_and_bindings() -> None:
    setting = types.parse_connection_setting("Mail.Contoso.com:995:ssl")
    assert str(setting) == "Mail.Contoso.com:995:SSL"
    assert str(types.parse_connection_setting("mail.contoso.com:110:")) == "mail.contoso.com:110:"
    assert str(types.parse_endpoint("[::]:993")) == "[::]:993"
    for bad in ("mail:99999:SSL", "mail.contoso.com:995:SSH", "a b:1:TLS"):
        with pytest.raises(ValueError):
            types.parse_connection_setting(bad)


def test_models_carry_exchange_defaults() -> None:
    pop, imap = PopSettings(), ImapSettings()
    assert (pop.MaxCommandSize, imap.MaxCommandSize) == (512, 10240)
    assert (pop.ProxyTargetPort, imap.ProxyTargetPort) == (1995, 1993)
    assert pop.LoginType is types.LoginType.SecureLogin
    assert pop.AuthenticatedConnectionTimeout == timedelta(minutes=30)
    assert pop.PreAuthenticatedConnectionTimeout == timedelta(minutes=1)
    assert imap.Banner == "The Microsoft Exchange IMAP4 service is ready."
    assert pop.MaxConnectionsPerUser == 16
    fresh = default_settings()
    assert set(fresh.ReceiveConnectors) == {"Client Frontend MBX01", "Client Proxy MBX01"}
    assert not fresh.ReceiveConnectors["Client Frontend MBX01"].AdvertiseClientSettings


PARSERS = [
    types.parse_timespan,
    types.parse_bytesize,
    types.parse_bool,
    types.parse_int,
    types.parse_endpoint,
    types.parse_connection_setting,
    types.parse_fqdn,
    types.parse_url,
    types.LoginType.parse,
    types.MimeTextFormat.parse,
]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parsers_fail_only_with_a_value_error(text: str) -> None:
    for parse in PARSERS:
        try:
            parse(text)
        except ValueError as exc:
            assert str(exc)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(PopSettings.model_fields)),
        st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
        max_size=4,
    )
)
def test_models_reject_bad_values_with_a_validation_error(values: dict[str, object]) -> None:
    try:
        PopSettings(**values)
    except ValidationError as exc:
        assert exc.errors()


@pytest.mark.parametrize("text", ["999999999999.00:00:00", "9" * 400, "9" * 400 + "MB"])
def test_absurdly_large_values_are_value_errors(text: str) -> None:
    """Found by the fuzz test above: these overflowed timedelta / int(float)."""
    for parse in (types.parse_timespan, types.parse_bytesize):
        with pytest.raises(ValueError):
            parse(text)
