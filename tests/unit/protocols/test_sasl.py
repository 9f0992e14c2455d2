"""SASL PLAIN (RFC 4616) and base64 responses: the one codec IMAP, POP3 and SMTP share."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.protocols import sasl


def test_plain_fields() -> None:
    plain = sasl.decode_plain(b"\0bob\0secret")
    assert plain == sasl.Plain("", "bob", "secret")
    assert not plain.acts_as_other


def test_authzid_of_the_user_himself_is_not_acting_as_another() -> None:
    assert not sasl.decode_plain(b"Bob\0bob\0pw").acts_as_other
    assert sasl.decode_plain(b"alice\0bob\0pw").acts_as_other


@pytest.mark.parametrize(
    "message",
    [b"", b"bob", b"\0bob", b"a\0b\0c\0d", b"\0\0pw", b"\0b\xffob\0pw", b"\0bob\0p\xc3"],
)
def test_malformed_plain_is_refused(message: bytes) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.decode_plain(message)


def test_empty_password_is_left_to_the_directory() -> None:
    assert sasl.decode_plain(b"\0bob\0").password == ""


def test_utf8_fields() -> None:
    plain = sasl.decode_plain("\0jürgen\0pässword".encode())
    assert (plain.authcid, plain.password) == ("jürgen", "pässword")


@pytest.mark.parametrize(
    ("line", "data"),
    [(b"AGJvYgBwdw==", b"\0bob\0pw"), (b"AGJvYgBwdw==\r\n", b"\0bob\0pw"), (b"=", b""), (b"", b"")],
)
def test_response_lines(line: bytes, data: bytes) -> None:
    assert sasl.decode_response(line) == data


@pytest.mark.parametrize(
    "line", [b"AGJvYgBwdw", b"AGJv YgBwdw==", b"AGJvYgBwdw==AA", b"*", b"%%%%"]
)
def test_response_that_is_not_canonical_base64_is_refused(line: bytes) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.decode_response(line)


@given(
    st.text(min_size=1).filter(lambda s: "\0" not in s), st.text().filter(lambda s: "\0" not in s)
)
def test_encode_then_decode_round_trips(user: str, password: str) -> None:
    wire = sasl.encode_plain(user, password)
    assert base64.b64decode(wire, validate=True) == f"\0{user}\0{password}".encode()
    assert sasl.decode_plain(sasl.decode_response(wire)) == sasl.Plain("", user, password)
