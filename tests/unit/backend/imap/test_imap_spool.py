"""crlf() on APPEND data: every bare LF becomes CRLF, anything else is left as it is."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from server.backend.imap.spool import crlf


def reference(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\x00", b"\n\n"])).map(b"".join))
def test_crlf_turns_exactly_the_bare_lfs_into_crlf(data: bytes) -> None:
    assert crlf(data) == reference(data)


def test_crlf_returns_clean_data_itself() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert crlf(data) is data
    assert crlf(b"a\nb") == b"a\r\nb"
