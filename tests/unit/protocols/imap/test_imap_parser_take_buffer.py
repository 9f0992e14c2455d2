"""CommandReader.take_buffer(): the bytes pipelined behind a command, for a proxy."""

from __future__ import annotations

from server.protocols.imap.reader import CommandReader
from server.protocols.imap.requests import Command, Login


def test_take_buffer_returns_what_came_behind_the_login_verbatim() -> None:
    reader = CommandReader()
    reader.feed(b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\na3 APPEND INBOX {5+}\r\nhel")
    event = reader.next_event()
    assert isinstance(event, Command) and isinstance(event.args, Login)
    assert reader.take_buffer() == b"a2 SELECT INBOX\r\na3 APPEND INBOX {5+}\r\nhel"
    assert reader.take_buffer() == b""
    assert reader.next_event() is None and reader.buffered == 0


def test_take_buffer_leaves_the_reader_usable() -> None:
    reader = CommandReader()
    reader.feed(b"a1 NOOP\r\npartial")
    assert isinstance(reader.next_event(), Command)
    assert reader.take_buffer() == b"partial"
    reader.feed(b"a2 NOOP\r\n")
    event = reader.next_event()
    assert isinstance(event, Command) and event.tag == "a2"
