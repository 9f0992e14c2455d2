"""Tags are 7-bit (RFC 3501 section 9: tag = 1*<any ASTRING-CHAR except "+">, and CHAR is
%x01-7F). A line whose tag has 8-bit bytes has no tag: it is answered "* BAD" and the
session goes on; no tag is ever echoed with its bytes changed."""

from __future__ import annotations

import pytest

from server.protocols.imap.reader import CommandReader
from server.protocols.imap.requests import Command, ParseError


def events(data: bytes) -> list[object]:
    reader = CommandReader(max_command_size=8192, max_literal_size=1024)
    reader.feed(data)
    out = []
    while (event := reader.next_event()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize(
    "line", [b"\xc3\xa9 NOOP", b"t\xe9 NOOP", b"ab\xffc NOOP", b"\xe9", b"a\x80 LOGIN bob pw"]
)
def test_eight_bit_tag_is_refused_untagged(line: bytes) -> None:
    first, after = events(line + b"\r\nb1 NOOP\r\n")
    assert isinstance(first, ParseError) and first.tag is None
    assert isinstance(after, Command) and after.tag == "b1"


def test_seven_bit_tags_are_kept_exactly() -> None:
    for tag in ("a1", "A.b-c_d]", "~!#&'"):
        [event] = events(tag.encode() + b" NOOP\r\n")
        assert isinstance(event, Command) and event.tag == tag
