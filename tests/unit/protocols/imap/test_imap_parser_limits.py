"""IMAP command reader: the limits imaptest and hostile clients reach (ID size, literal
sizes, LITERAL+ that cannot be waited for) and IMAP4rev2's UTF-8 mailbox names."""

from __future__ import annotations

import pytest

from server.protocols.imap.parser import parse_command
from server.protocols.imap.reader import CommandReader
from server.protocols.imap.requests import (
    Command,
    CommandTooLong,
    LiteralTooLarge,
    NeedContinuation,
    Noop,
)


def drain(reader: CommandReader, data: bytes = b"") -> list:
    if data:
        reader.feed(data)
    return list(reader.events())


def test_id_of_the_size_rfc2971_allows_passes_a_smaller_command_limit() -> None:
    """imaptest "id": 30 fields of 30 octets with 1024-octet values (RFC 2971 3.3) are
    about 32 KB; the command must not be refused as too long where MaxCommandSize is 10240.
    Other commands keep the limit."""
    fields = " ".join(f'"{i:030d}" "{"v" * 1024}"' for i in range(30))
    reader = CommandReader(max_command_size=10240)
    data = f"a ID ({fields})\r\n".encode()
    reader.feed(data[:20000])
    assert reader.next_event() is None
    reader.feed(data[20000:])
    event = reader.next_event()
    assert isinstance(event, Command) and len(event.args.params) == 30
    reader.feed(b"b NOOP " + b"x" * 20000 + b"\r\n")
    assert isinstance(reader.next_event(), CommandTooLong)
    reader.feed(b"c id (" + b"x" * 40000)
    assert isinstance(reader.next_event(), CommandTooLong)


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX {2147483648+}",
        b"a LOGIN {4294967296+}",
        b"a FOO {4294967296+}",
        b"a SEARCH TEXT {99999999999999999999999+}",
        b"a EXAMINE " + b"x" * 200 + b" {4294967296+}",
    ],
)
def test_huge_refused_non_sync_literal_is_not_waited_for(line: bytes) -> None:
    """A refused LITERAL+ too big to read and throw away: the reader answers the command,
    then sets `closing` and ignores everything after, instead of waiting for 4 GB."""
    reader = CommandReader(max_command_size=150, max_literal_size=1000)
    events = drain(reader, line + b"\r\n" + b"x" * 5000 + b"\r\nb NOOP\r\n")
    assert len(events) == 1 and not isinstance(events[0], Command)
    assert reader.closing
    assert drain(reader, b"c NOOP\r\n") == [] and reader.buffered == 0


def test_small_refused_non_sync_literal_is_still_skipped() -> None:
    reader = CommandReader(max_literal_size=10)
    events = drain(reader, b"a APPEND INBOX {20+}\r\n" + b"y" * 20 + b"\r\nb NOOP\r\n")
    assert events == [LiteralTooLarge("a", 20), Command("b", "NOOP", Noop())]
    assert not reader.closing


def test_only_append_literals_may_pass_the_command_size() -> None:
    """A LIST, SEARCH or EXAMINE literal is held to max_command_size, refused at once;
    an APPEND message may be up to max_literal_size."""
    reader = CommandReader(max_command_size=1024, max_literal_size=1 << 20)
    for line, size in (
        (b'a LIST "" {5000}', 5000),
        (b"a SEARCH TEXT {5000}", 5000),
        (b"a EXAMINE {2147483648}", 2147483648),
    ):
        assert drain(reader, line + b"\r\n") == [LiteralTooLarge("a", size)]
    assert drain(reader, b"a APPEND INBOX {5000}\r\n") == [NeedContinuation()]


def test_utf8_mailbox_names_after_enable_imap4rev2() -> None:
    """RFC 9051 5.1: with IMAP4rev2 enabled a name is UTF-8 and "&" is just a character."""
    (event,) = [parse_command([b"a SELECT R&D"], None, utf8_names=True)]
    assert isinstance(event, Command) and event.args.mailbox == "R&D"
    (event,) = [parse_command(['a CREATE "Été/x"'.encode()], None, utf8_names=True)]
    assert event.args.mailbox == "Été/x"
    (event,) = [parse_command([b"a SELECT inbox"], None, utf8_names=True)]
    assert event.args.mailbox == "INBOX"
    reader = CommandReader()
    reader.utf8_names = True
    (event,) = drain(reader, b"a DELETE R&D\r\n")
    assert event.args.mailbox == "R&D"
