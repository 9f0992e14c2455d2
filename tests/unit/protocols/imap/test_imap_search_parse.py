"""SEARCH criteria into a syntax tree: every RFC 3501 key, MODSEQ, $, nesting, charsets."""

from __future__ import annotations

import datetime as dt

import pytest

from server.protocols.imap import search as s
from server.protocols.imap.reader import parse_line
from server.protocols.imap.requests import BadCharset, Command, ParseError, Search
from server.protocols.imap.seqset import SAVED, SeqSet


def key(criteria: bytes) -> s.SearchKey:
    event = parse_line(b"t SEARCH " + criteria)
    assert isinstance(event, Command), event
    assert isinstance(event.args, Search)
    return event.args.key


def bad(criteria: bytes) -> str:
    event = parse_line(b"t SEARCH " + criteria)
    assert isinstance(event, ParseError), event
    return event.message


D = dt.date(1994, 2, 1)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"ALL", s.AllKey()),
        (b"ANSWERED", s.FlagKey("\\Answered")),
        (b"DELETED", s.FlagKey("\\Deleted")),
        (b"DRAFT", s.FlagKey("\\Draft")),
        (b"FLAGGED", s.FlagKey("\\Flagged")),
        (b"RECENT", s.FlagKey("\\Recent")),
        (b"SEEN", s.FlagKey("\\Seen")),
        (b"UNANSWERED", s.FlagKey("\\Answered", False)),
        (b"UNDELETED", s.FlagKey("\\Deleted", False)),
        (b"UNDRAFT", s.FlagKey("\\Draft", False)),
        (b"UNFLAGGED", s.FlagKey("\\Flagged", False)),
        (b"UNSEEN", s.FlagKey("\\Seen", False)),
        (b"OLD", s.FlagKey("\\Recent", False)),
        (b"NEW", s.AndKey((s.FlagKey("\\Recent"), s.FlagKey("\\Seen", False)))),
        (b"KEYWORD $Junk", s.FlagKey("$Junk")),
        (b"UNKEYWORD foo", s.FlagKey("foo", False)),
        (b"BCC a", s.HeaderKey("Bcc", "a")),
        (b"CC a", s.HeaderKey("Cc", "a")),
        (b"FROM a", s.HeaderKey("From", "a")),
        (b"TO a", s.HeaderKey("To", "a")),
        (b'SUBJECT "hello world"', s.HeaderKey("Subject", "hello world")),
        (b'HEADER X-Spam-Flag ""', s.HeaderKey("X-Spam-Flag", "")),
        (b"BODY x", s.BodyKey("x")),
        (b"TEXT x", s.TextKey("x")),
        (b"BEFORE 1-Feb-1994", s.DateKey("internal", "before", D)),
        (b"ON 01-feb-1994", s.DateKey("internal", "on", D)),
        (b'SINCE "1-Feb-1994"', s.DateKey("internal", "since", D)),
        (b"SENTBEFORE 1-Feb-1994", s.DateKey("sent", "before", D)),
        (b"SENTON 1-Feb-1994", s.DateKey("sent", "on", D)),
        (b"SENTSINCE 1-Feb-1994", s.DateKey("sent", "since", D)),
        (b"LARGER 1000", s.SizeKey("larger", 1000)),
        (b"SMALLER 0", s.SizeKey("smaller", 0)),
        (b"OLDER 3600", s.AgeKey("older", 3600)),
        (b"YOUNGER 60", s.AgeKey("younger", 60)),
        (b"UID 1:*", s.SeqKey(SeqSet(((1, None),)), uid=True)),
        (b"2,4:*", s.SeqKey(SeqSet(((2, 2), (4, None))))),
        (b"*", s.SeqKey(SeqSet(((None, None),)))),
        (b"$", s.SeqKey(SAVED)),
        (b"UID $", s.SeqKey(SAVED, uid=True)),
        (b"NOT SEEN", s.NotKey(s.FlagKey("\\Seen"))),
        (b"OR SEEN FLAGGED", s.OrKey(s.FlagKey("\\Seen"), s.FlagKey("\\Flagged"))),
        (b"(SEEN)", s.FlagKey("\\Seen")),
        (b"MODSEQ 620162338", s.ModSeqKey(620162338)),
        (
            b'MODSEQ "/flags/\\\\draft" all 620162338',
            s.ModSeqKey(620162338, "/flags/\\draft", "all"),
        ),
        (b"all", s.AllKey()),
    ],
)
def test_single_keys(criteria: bytes, expected: s.SearchKey) -> None:
    assert key(criteria) == expected


def test_implicit_and_and_nesting() -> None:
    assert key(b"OR (FROM a SEEN) NOT (TO b) 1:5 UNDELETED") == s.AndKey(
        (
            s.OrKey(
                s.AndKey((s.HeaderKey("From", "a"), s.FlagKey("\\Seen"))),
                s.NotKey(s.HeaderKey("To", "b")),
            ),
            s.SeqKey(SeqSet(((1, 5),))),
            s.FlagKey("\\Deleted", False),
        )
    )


def test_or_of_ors() -> None:
    assert key(b"OR OR SEEN DRAFT LARGER 5") == s.OrKey(
        s.OrKey(s.FlagKey("\\Seen"), s.FlagKey("\\Draft")), s.SizeKey("larger", 5)
    )


def test_literal_search_string() -> None:
    assert key(b"SUBJECT {5+}\r\nhello") == s.HeaderKey("Subject", "hello")


def test_8bit_without_charset_is_read_as_utf8() -> None:
    assert key('SUBJECT "caf\u00e9"'.encode()) == s.HeaderKey("Subject", "caf\u00e9")


def test_charset_must_come_before_keys_and_after_return() -> None:
    event = parse_line(b"t SEARCH RETURN (COUNT) CHARSET US-ASCII ALL")
    assert isinstance(event, Command) and event.args.charset == "US-ASCII"
    assert isinstance(parse_line(b"t SEARCH CHARSET UTF-8 RETURN (COUNT) ALL"), ParseError)


def test_bad_charset_event() -> None:
    assert parse_line(b"t SEARCH CHARSET BOGUS-1 ALL") == BadCharset("t", "SEARCH", "BOGUS-1")
    assert s.SUPPORTED_CHARSETS == ("UTF-8", "US-ASCII")
    with pytest.raises(s.BadCharsetError):
        s.lookup_charset("hex")  # a Python codec, but not a text encoding


def test_nesting_limit() -> None:
    assert "deeply" in bad(b"NOT " * (s.MAX_DEPTH + 5) + b"SEEN")
    assert "deeply" in bad(b"(" * (s.MAX_DEPTH + 5) + b"SEEN" + b")" * (s.MAX_DEPTH + 5))
    assert key(b"NOT " * 10 + b"SEEN")


@pytest.mark.parametrize(
    "criteria",
    [
        b"BOGUS",
        b"FROM",
        b"BEFORE 1994-02-01",
        b"BEFORE 31-Feb-1994",
        b"BEFORE 1-Xyz-1994",
        b"LARGER x",
        b"LARGER 99999999999999999999999",
        b"OLDER 0",
        b"OR SEEN",
        b"NOT",
        b"(SEEN",
        b"SEEN)",
        b"()",
        b"UID",
        b"UID x",
        b"MODSEQ",
        b'MODSEQ "/flags/\\\\seen" mine 5',
        b"KEYWORD",
        b"HEADER Subject",
        b"0",
        b"SEEN  DRAFT",
    ],
)
def test_errors(criteria: bytes) -> None:
    bad(criteria)


def test_helpers() -> None:
    assert s.uses_modseq(key(b"OR SEEN NOT MODSEQ 5"))
    assert not s.uses_modseq(key(b"SEEN"))
    assert s.uses_saved(key(b"(SEEN UID $)"))
    assert not s.uses_saved(key(b"1:*"))
