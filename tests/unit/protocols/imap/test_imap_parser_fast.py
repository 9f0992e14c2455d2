"""The parser's fast paths (command head, FETCH items, one-number sequence sets, one-line
commands in the reader) give exactly what the general paths give, errors included."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.protocols.imap import lexer, parser, utf7
from server.protocols.imap import reader as reader_module
from server.protocols.imap.lexer import Cursor
from server.protocols.imap.reader import CommandReader
from server.protocols.imap.requests import Command, CommandTooLong, ParseError
from server.protocols.imap.seqset import SeqSet

MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = [
    b"FETCH", b"fetch", b"UID", b"uid", b"Uid", b"SELECT", b"LOGOUT", b"NOOP", b"STORE",
    b"SEARCH", b"APPEND", b"COPY", b"EXPUNGE", b"SORT", b"NOTACOMMAND", b"ID", b"\xe9",
    b"BODY", b"BODY.PEEK", b"body.peek", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE", b"FLAGS",
    b"RFC822", b"RFC822.SIZE", b"rfc822.header", b"RFC822.TEXT", b"UID", b"MODSEQ",
    b"ENVELOPE", b"BODYSTRUCTURE", b"INTERNALDATE", b"FAST", b"X-GM", b"BODY.PEEKX",
]  # fmt: skip
PIECES = [
    *WORDS, b" ", b"  ", b"[", b"]", b"[]", b"<", b"<0.10>", b"<0.0>", b"(", b")", b"{3}",
    b"a1", b"*", b"+", b"1", b"0", b"01", b"123", b"4294967295", b"4294967296", b":", b",",
    b"$", b"HEADER", b"TEXT", b".", b"1.MIME", b"\x00", b"\xff", b'"', b"\\", b"%", b"-",
]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES), max_size=10).map(b"".join)
lines = st.one_of(texts, st.binary(max_size=20), st.tuples(texts, texts).map(b" ".join))


def outcome(func: Callable[[Cursor], object], line: bytes) -> tuple[object, ...]:
    cur = Cursor([line])
    try:
        result = func(cur)
    except ValueError as exc:
        return ("error", str(exc))
    return ("ok", result, cur.pos)


@MANY
@given(
    st.one_of(lines, st.tuples(st.sampled_from([b"a1", b"x.y", b"+", b""]), lines).map(b" ".join))
)
def test_head_fast_path_matches_general(line: bytes) -> None:
    assert outcome(parser.head, line) == outcome(parser._head_general, line)


@MANY
@given(
    st.one_of(
        lines, st.tuples(st.sampled_from(WORDS), st.sampled_from(PIECES), texts).map(b"".join)
    )
)
@example(b"BODY.PEEK[]<0.10>")
@example(b"binary.size[]<0.1>")
@example(b"BODY[]<>")
def test_fetch_item_fast_path_matches_general(line: bytes) -> None:
    fast = outcome(parser._fetch_item, line)
    assert fast == outcome(parser._fetch_item_general, line)
    if fast[0] == "ok":
        # The tables hold what the general path builds, response name included.
        assert fast[1].response_name == outcome(parser._fetch_item_general, line)[1].response_name  # type: ignore[union-attr]


def _seqset_general(cur: Cursor) -> SeqSet:
    return SeqSet.parse(cur.match(parser.re.compile(rb"[0-9*:,$]+"), "sequence set"))


@MANY
@given(st.one_of(lines, st.integers(0, 1 << 40).map(lambda n: str(n).encode()), texts))
def test_seqset_fast_path_matches_general(line: bytes) -> None:
    assert outcome(Cursor.seqset, line) == outcome(_seqset_general, line)


@MANY
@given(st.tuples(st.sampled_from([b"a1 ", b"b ", b"", b"* "]), lines).map(b"".join))
def test_one_line_command_matches_parse_command_and_leaves_nothing(line: bytes) -> None:
    line = line.replace(b"\n", b"").rstrip(b"\r")
    reader = CommandReader(max_command_size=24)
    reader.feed(line + b"\r\n")
    event = reader.next_event()
    if not line:
        assert event is None
    elif len(line) > 24 and not reader_module._ID_COMMAND.match(line):  # ID may be longer
        assert isinstance(event, CommandTooLong)
    elif not line.endswith(b"}"):
        assert event == parser.parse_command([line])
    if not reader.in_command:
        assert reader.in_memory == 0
        # The reader goes on with a command that has a literal, as after any command.
        reader.feed(b"c LOGIN {3}\r\n")
        assert reader.next_event() is not None
        reader.feed(b"bob pw\r\n")
        assert reader.next_event() == Command("c", "LOGIN", parser.Login("bob", "pw"))


def test_examples_share_the_tables() -> None:
    fast = parser.parse_command([b"b1 UID FETCH 123 (BODY.PEEK[] body[] FLAGS)"])
    assert isinstance(fast, Command)
    general = parser.parse_command([b"b1 UID FETCH 123 (BODY.PEEK[]<0.5> BODY[]<0.5> FLAGS)"])
    assert isinstance(general, Command)
    assert [i.response_name for i in fast.args.items] == ["BODY[]", "BODY[]", "FLAGS"]  # type: ignore[attr-defined]
    assert [i.section for i in fast.args.items] == [i.section for i in general.args.items]  # type: ignore[attr-defined]
    assert parser.parse_command([b"x UID FETCH 0 FLAGS"]) == ParseError(
        "x", "Invalid sequence set", "UID FETCH"
    )


@MANY
@given(
    st.sampled_from([b"a APPEND ", b"b LOGIN ", b"c UID SEARCH TEXT ", b"d SELECT ", b"e ID "]),
    texts,
    st.binary(max_size=6),
    st.sampled_from([b"", b" ", b" x", b" {2}", b")"]),
)
def test_literal_command_reuses_head_as_parse_command_would_run_it(
    start: bytes, middle: bytes, data: bytes, rest: bytes
) -> None:
    middle = middle.replace(b"\n", b"").replace(b"\r", b"").replace(b"{", b"")
    reader = CommandReader()
    reader.feed(start + middle + b"{%d+}\r\n" % len(data) + data + rest + b"\r\n")
    if rest.endswith(b"}"):
        reader.feed(b"xy\r\n")
    event = reader.next_event()
    segs = [start + middle, rest.removesuffix(b"{2}")]
    lits = [(data, False)]
    if rest.endswith(b"}"):
        segs.append(b"")
        lits.append((b"xy", False))
    if isinstance(event, Command | ParseError) and not reader.in_command:
        assert event == parser.parse_command(segs, lits)


def _mailbox_name_general(raw: bytes) -> str:
    if len(raw) == 5 and raw.upper() == b"INBOX":
        return "INBOX"
    if not raw.isascii():
        return raw.decode("utf-8")
    return utf7.decode(raw)


@MANY
@given(st.one_of(st.binary(max_size=12), texts, st.text(max_size=8).map(str.encode)))
def test_plain_mailbox_name_fast_path_matches_utf7(raw: bytes) -> None:
    def run(func: Callable[[bytes], str]) -> tuple[str, str]:
        try:
            return ("ok", func(raw))
        except ValueError:
            return ("error", "")

    assert run(lexer.mailbox_name) == run(_mailbox_name_general)
