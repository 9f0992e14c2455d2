"""mime.header_filter (HEADER.FIELDS[.NOT] of a header block): the regular-expression
fast path gives exactly what the line-by-line reference gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.mail import mime
from server.protocols.imap import bodystructure

LINES = [
    b"From: a\r\n",
    b"from : b\r\n",
    b"FROM:\r\n",
    b" cont\r\n",
    b"\tcont2\n",
    b"Subject: x\n",
    b"From\r\n",
    b"From",
    b"From\r",
    b"X-From: y\r\n",
    b"Date: d",
    b"From:x",
    b"\r\r\n",
    b"Fromage: z\r\n",
    b"From \r\n",
    b"subject\n",
    b"  \r\n",
    b"Date:\t1 Jan\r\n",
    b"To: \xe9t\xe9\r\n",
    b"\r\n",
    b"\n",
]
NAMES = ["FROM", "SUBJECT", "DATE", "FROMAGE", "X-FROM", "TO", "X Y", "A:B"]


def block_of(data: bytes) -> bytes:
    """The header block as the parser cuts it (first blank line included)."""
    whole = data + b"body"
    return whole[: bodystructure.analyze(whole).header_len]


def reference(block: bytes, names: list[str], exclude: bool) -> bytes:
    return mime._filter_block(block, frozenset(n.lower().encode() for n in names), exclude)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(LINES), max_size=10),
    st.lists(st.sampled_from(NAMES), max_size=4),
    st.booleans(),
)
def test_filter_matches_the_reference(lines: list[bytes], names: list[str], exclude: bool) -> None:
    block = block_of(b"".join(lines))
    assert mime.header_filter(names, exclude)(block) == reference(block, names, exclude)


def test_fields_with_continuations_and_the_blank_line() -> None:
    block = b"Received: x\r\nFrom: a\r\n  b\r\nSubject: s\r\nfrom: again\r\n\r\n"
    assert mime.header_filter(["FROM"])(block) == b"From: a\r\n  b\r\nfrom: again\r\n\r\n"
    assert mime.header_filter(["FROM"], exclude=True)(block) == b"Received: x\r\nSubject: s\r\n\r\n"
    assert mime.header_filter(["Nope"])(block) == b"\r\n"
    assert mime.header_filter(["subject"])(b"Subject: s\n\n") == b"Subject: s\n\n"
    assert mime.header_filter(["subject"])(b"Subject: no end") == b"Subject: no end\r\n\r\n"


def test_fetch_section_uses_it() -> None:
    raw = b"From: a\r\nTo: b\r\n\r\nbody\r\n"
    info = bodystructure.analyze(raw)
    assert mime.fetch_section(raw, info, (), "HEADER.FIELDS", ["to"]) == b"To: b\r\n\r\n"
    assert mime.fetch_section(raw, info, (), "HEADER.FIELDS.NOT", ["to"]) == b"From: a\r\n\r\n"
