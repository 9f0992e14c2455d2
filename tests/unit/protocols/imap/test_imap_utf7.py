"""Modified UTF-7 mailbox names (RFC 3501 5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocols.imap.utf7 import decode, encode

EXAMPLES = [
    ("INBOX", "INBOX"),
    ("&", "&-"),
    ("A&B", "A&-B"),
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("\u00c9t\u00e9", "&AMk-t&AOk-"),
    ("\U0001f600", "&2D3eAA-"),
    ("tab\there", "tab&AAk-here"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "wire"), EXAMPLES)
def test_examples(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text
    assert decode(wire.encode()) == text


@pytest.mark.parametrize(
    "wire",
    [
        "&",  # unterminated
        "&Jjo",  # unterminated
        "&Jjo!-",  # bad base64 character
        "&AGE-",  # base64 for printable ASCII "a"
        "&AMk-&AOk-",  # two runs back to back
        "&AMl-",  # non-zero padding bits
        "&2D0-",  # lone high surrogate
        "&A-",  # impossible length
        "&U/BTFw-",  # "/" instead of ","
        "caf\u00e9",  # raw 8-bit
        "a\x01b",  # control character
    ],
)
def test_strict_decode_rejects(wire: str) -> None:
    with pytest.raises(ValueError):
        decode(wire)


def test_8bit_bytes_rejected() -> None:
    with pytest.raises(ValueError):
        decode("caf\u00e9".encode())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_round_trip(name: str) -> None:
    wire = encode(name)
    assert wire.isascii() and all(" " <= c <= "~" for c in wire)
    assert decode(wire) == name
