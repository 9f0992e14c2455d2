"""Bounded fuzzing of the IMAP command reader: hostile bytes never raise, framing does not
depend on how the bytes are split, and the reader always recovers for the next command."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from server.protocols.imap.reader import CommandReader, parse_line
from server.protocols.imap.requests import (
    BadCharset,
    Command,
    CommandTooLong,
    LiteralTooLarge,
    NeedContinuation,
    Noop,
    ParseError,
    RawLine,
)

EVENT_TYPES = (
    Command,
    NeedContinuation,
    ParseError,
    BadCharset,
    CommandTooLong,
    LiteralTooLarge,
    RawLine,
)
MAX_COMMAND = 1024
MAX_LITERAL = 64

SEEDS = [
    b"a1 LOGIN {3}\r\nbob {2+}\r\npw\r\n",
    b'a2 UID FETCH 1:*,5 (UID FLAGS BODY.PEEK[1.HEADER.FIELDS (From "To")]<0.10>) (CHANGEDSINCE 5 VANISHED)\r\n',
    b"a3 SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM x SINCE 1-Jan-2020) NOT UID $ MODSEQ 5\r\n",
    b'a4 APPEND INBOX (\\Seen) " 1-Jan-2020 10:00:00 +0100" {5+}\r\nhello ~{2+}\r\n\x00\x01\r\n',
    b"a5 STORE 1 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Deleted $x)\r\n",
    b'a6 LIST (SUBSCRIBED) "" ("*" &AOk-) RETURN (STATUS (MESSAGES))\r\n',
    b"a7 SELECT INBOX (QRESYNC (1 2 3:5 (1 3)))\r\n",
    b'a8 ID ("name" NIL)\r\n',
    b"a9 AUTHENTICATE PLAIN AGJvYgBwdw==\r\n",
    b"b1 APPEND INBOX {99999}\r\n",
    b"b2 APPEND INBOX {100+}\r\n",
    b"DONE\r\n",
]
SPECIALS = b' {}+~()[]<>"\\\r\n*%$:,.0123456789ABCXYZ\x00\xff'

chunks = st.one_of(
    st.sampled_from(SEEDS),
    st.binary(max_size=30),
    st.lists(st.sampled_from(list(SPECIALS)), max_size=30).map(bytes),
    st.sampled_from(SEEDS).flatmap(
        lambda seed: st.tuples(
            st.integers(0, len(seed)), st.integers(0, 5), st.binary(max_size=4)
        ).map(lambda t: seed[: t[0]] + t[2] + seed[t[0] + t[1] :])
    ),
)
streams = st.lists(chunks, max_size=8).map(b"".join)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(reader: CommandReader, pieces: list[bytes]) -> list:
    events = []
    for piece in pieces:
        reader.feed(piece)
        for event in reader.events():
            assert isinstance(event, EVENT_TYPES)
            events.append(event)
            assert reader.buffered <= MAX_COMMAND + MAX_LITERAL + len(piece) * 2 + 4096
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(streams, st.lists(st.integers(0, 10_000), max_size=12))
def test_reader_never_raises_and_split_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = run(CommandReader(MAX_COMMAND, MAX_LITERAL), [data])
    pieces = run(CommandReader(MAX_COMMAND, MAX_LITERAL), split(data, cuts))
    assert pieces == whole


@FUZZ
@given(streams)
def test_valid_command_parses_after_garbage(data: bytes) -> None:
    reader = CommandReader(MAX_COMMAND, MAX_LITERAL)
    run(reader, [data])
    # A client that lost sync ends any literal it announced and its line: empty lines
    # flush whatever the reader still waits for, and are ignored between commands.
    assume(reader.pending_literal < 1_000_000)
    for _ in range(3):
        run(reader, [b"\n" * (reader.pending_literal + 2)])
    assert not reader.in_command
    assert run(reader, [b"zz NOOP\r\n"]) == [Command("zz", "NOOP", Noop())]


@FUZZ
@given(st.binary(max_size=200))
def test_parse_line_on_random_bytes(data: bytes) -> None:
    event = parse_line(b"t " + data.replace(b"\n", b" "))
    assert isinstance(event, EVENT_TYPES)


@FUZZ
@given(streams)
def test_line_mode_yields_only_raw_lines(data: bytes) -> None:
    reader = CommandReader(MAX_COMMAND, MAX_LITERAL)
    reader.line_mode = True
    for event in run(reader, [data]):
        assert isinstance(event, RawLine | CommandTooLong)
