"""SORT/THREAD algorithms (sortthread.py), their parser, the sort-key columns of the
store, and SORT/THREAD/ESORT/context commands in the sans-IO session."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.protocols.imap import requests as rq
from server.protocols.imap.reader import parse_line
from server.protocols.imap.sortthread import (
    EMPTY_KEYS,
    Item,
    SortCriterion,
    base_subject,
    collation_key,
    format_threads,
    sort_items,
    sort_keys_from_header,
    thread_orderedsubject,
    thread_references,
)
from server.store.sqlite import SCHEMA_VERSION, SqliteMailStore
from tests.unit.backend.imap.test_imap_session import Client

# --- base subject (RFC 5256 section 2.1) -----------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "Hello", False),
        ("Re: Hello", "Hello", True),
        ("RE:  re: Fwd: Hello", "Hello", True),
        ("Fw: Hello", "Hello", True),
        ("Re[2]: Hello", "Hello", True),
        ("Re [list]: Hello", "Hello", True),
        ("[list] Re: Hello", "Hello", True),
        ("[list] Hello", "Hello", False),
        ("[list]", "[list]", False),  # removing the blob would leave nothing
        ("Hello (fwd)", "Hello", True),
        ("Hello (fwd) (FWD)  ", "Hello", True),
        ("[Fwd: Re: Hello]", "Hello", True),
        ("Re: [fwd: [list] Hello (fwd)]", "Hello", True),
        ("  Hello\t  world  ", "Hello world", False),
        ("Reply to all", "Reply to all", False),
        ("Re:", "", True),
        ("", "", False),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def test_collation_key_is_unicode_casemap() -> None:
    assert collation_key("hello") == collation_key("HeLLo")
    assert collation_key("é") == collation_key("É") == "E\u0301"
    # Titlecase: "_" (0x5F) sorts after letters, as after upper-case ASCII.
    assert collation_key("a") < collation_key("_")


# --- keys from a header ------------------------------------------------------------------------


def test_sort_keys_from_header() -> None:
    keys = sort_keys_from_header(
        b"From: =?iso-8859-1?q?J=F6rg?= <joerg@example.com>, x@y\r\n"
        b"To: team: ann@example.com, bo@example.com;\r\n"
        b"Cc: carl@example.com (Carl C)\r\n"
        b"Subject: Re: =?utf-8?q?Caf=C3=A9?= (fwd)\r\n"
        b"Date: Tue, 3 Mar 2020 12:30:00 +0100\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        b"In-Reply-To: <p1@example.com> <p2@example.com>\r\n\r\n"
    )
    assert keys.subject == collation_key("Café") and keys.reply
    assert keys.from_ == "JOERG" and keys.display_from == collation_key("Jörg")
    assert keys.to == "TEAM" and keys.display_to == "TEAM"  # a group counts by its name
    assert keys.cc == "CARL"
    assert keys.sent == int(datetime(2020, 3, 3, 11, 30, tzinfo=UTC).timestamp())
    assert keys.message_id == "m1@example.com"
    assert keys.references == ("p1@example.com",)  # no References: first In-Reply-To


def test_sort_keys_without_headers() -> None:
    keys = sort_keys_from_header(b"X-Other: 1\r\nDate: not a date\r\n\r\n")
    assert keys == EMPTY_KEYS
    assert sort_keys_from_header(b"To: d\r\n\r\n").display_to == "D@MISSING_DOMAIN"


def test_references_win_over_in_reply_to() -> None:
    keys = sort_keys_from_header(b"References: <a@x>\r\n <b@x>\r\nIn-Reply-To: <c@x>\r\n\r\n")
    assert keys.references == ("a@x", "b@x")


# --- SORT order ----------------------------------------------------------------------------------


def _item(
    seq: int,
    subject: str = "",
    date: float | None = None,
    size: int = 0,
    arrival: float = 0.0,
    msgid: str = "",
    refs: tuple[str, ...] = (),
) -> Item:
    base, reply = base_subject(subject)
    keys = EMPTY_KEYS._replace(
        subject=collation_key(base), reply=reply, sent=date, message_id=msgid, references=refs
    )
    return Item(seq, seq, arrival, size, keys)


def test_sort_mixed_directions_and_sequence_tie_break() -> None:
    items = [
        _item(1, "b", size=10),
        _item(2, "a", size=10),
        _item(3, "b", size=20),
        _item(4, "a", size=10),
    ]
    order = sort_items(items, [SortCriterion("SUBJECT"), SortCriterion("SIZE", reverse=True)])
    assert [it.number for it in order] == [2, 4, 3, 1]
    # Equal under every key: sequence order, also when the key is reversed.
    order = sort_items(items, [SortCriterion("SUBJECT", reverse=True)])
    assert [it.number for it in order] == [1, 3, 2, 4]


def test_sort_date_falls_back_to_internaldate() -> None:
    items = [_item(1, date=300), _item(2, date=None, arrival=200), _item(3, date=100)]
    assert [it.number for it in sort_items(items, [SortCriterion("DATE")])] == [3, 2, 1]


# --- THREAD ------------------------------------------------------------------------------------


def _refs(*items: Item) -> bytes:
    return format_threads(thread_references(items))


def test_thread_references_rfc_cases() -> None:
    # A parent presumed from another message's References gives way to the message's own,
    # and a link that would make a loop is not made.
    assert (
        _refs(
            _item(1, date=3, msgid="a"),
            _item(2, date=1, msgid="b", refs=("a", "c")),
            _item(3, date=2, msgid="c", refs=("b",)),
        )
        == b"(3 2)(1)"
    )
    # Duplicate Message-IDs: the second message counts as having none.
    assert _refs(_item(1, msgid="a"), _item(2, msgid="a")) == b"(1)(2)"
    # A dummy parent with two children stays; with one, its child takes its place.
    assert _refs(_item(1, refs=("a",)), _item(2, refs=("a",))) == b"((1)(2))"
    assert _refs(_item(1, msgid="x", refs=("a",))) == b"(1)"
    # Branches, children by date.
    assert (
        _refs(
            _item(1, msgid="1"),
            _item(2, msgid="2", refs=("1",)),
            _item(3, msgid="3", refs=("1",)),
            _item(4, msgid="4", refs=("1", "2")),
        )
        == b"(1 (2 4)(3))"
    )
    assert _refs() == b""


def test_thread_references_gathers_by_subject() -> None:
    # Same base subject, the later one a reply: it becomes a child.
    assert (
        _refs(_item(1, "foo", msgid="a"), _item(2, "Re: foo", msgid="b", refs=("c",))) == b"(1 2)"
    )
    # Two non-replies with one subject: a dummy holds both.
    assert _refs(_item(1, "foo", date=1), _item(2, "foo", date=2)) == b"((1)(2))"
    # Empty subjects are never gathered.
    assert _refs(_item(1, "", date=1), _item(2, "", date=2)) == b"(1)(2)"


def test_thread_references_deep_chain() -> None:
    items = [_item(1, msgid="m1")]
    items += [_item(i, msgid=f"m{i}", refs=(f"m{i - 1}",)) for i in range(2, 5001)]
    out = _refs(*items)
    assert out.startswith(b"(1 2 3 ") and out.endswith(b" 5000)")


def test_thread_references_deep_branching() -> None:
    # Every message has a leaf reply and a reply that goes on: nesting 3,000 deep.
    items = [_item(1, msgid="m1", date=1)]
    for n in range(1, 3001):
        items.append(_item(2 * n, msgid=f"leaf{n}", refs=(f"m{n}",), date=2 * n))
        items.append(_item(2 * n + 1, msgid=f"m{n + 1}", refs=(f"m{n}",), date=2 * n + 1))
    out = _refs(*items)
    assert out.startswith(b"(1 (2)(3 (4)(5 (6)(7 ")
    assert out.endswith(b"(6000)(6001)" + b")" * 3000) and out.count(b"(") == out.count(b")")


def test_thread_orderedsubject() -> None:
    items = [
        _item(1, "a", date=10),
        _item(2, "b", date=9),
        _item(3, "Re: a", date=8),
        _item(4, "b", date=7),
        _item(5, "c", date=1),
    ]
    assert format_threads(thread_orderedsubject(items)) == b"(5)(4 2)(3 1)"
    items.append(_item(6, "a", date=11))
    assert format_threads(thread_orderedsubject(items)) == b"(5)(4 2)(3 (1)(6))"


# --- parser ------------------------------------------------------------------------------------


def test_parse_sort() -> None:
    cmd = parse_line(b"t UID SORT RETURN (MIN PARTIAL 4:2) (REVERSE date Subject) UTF-8 SEEN")
    assert isinstance(cmd, rq.Command) and cmd.name == "UID SORT"
    args = cmd.args
    assert isinstance(args, rq.Sort) and args.uid and args.charset == "UTF-8"
    assert args.criteria == (SortCriterion("DATE", True), SortCriterion("SUBJECT"))
    assert args.return_opts == {"MIN", "PARTIAL"} and args.partial == (2, 4)
    plain = parse_line(b"t SORT (DISPLAYTO) US-ASCII ALL").args
    assert isinstance(plain, rq.Sort) and plain.return_opts is None
    assert parse_line(b"t SORT RETURN () (SIZE) UTF-8 ALL").args.return_opts == {"ALL"}


@pytest.mark.parametrize(
    "line",
    [
        b"t SORT (DATE) ALL",  # the charset is required
        b"t SORT () UTF-8 ALL",
        b"t SORT (REVERSE) UTF-8 ALL",
        b"t SORT (BOGUS) UTF-8 ALL",
        b"t SORT DATE UTF-8 ALL",
        b"t SORT RETURN (PARTIAL 1) (DATE) UTF-8 ALL",
        b"t SORT RETURN (PARTIAL 1:*) (DATE) UTF-8 ALL",
        b"t SORT RETURN (PARTIAL *:1) (DATE) UTF-8 ALL",
        b"t SORT RETURN (PARTIAL 0:1) (DATE) UTF-8 ALL",
        b"t THREAD REFERENCES ALL",
        b"t THREAD REFS UTF-8 ALL",
        b"t SEARCH RETURN (PARTIAL 1) ALL",
        b"t CANCELUPDATE",
        b"t CANCELUPDATE tag",  # tags are strings
    ],
)
def test_parse_errors(line: bytes) -> None:
    assert isinstance(parse_line(line), rq.ParseError)


def test_parse_thread_search_and_cancelupdate() -> None:
    args = parse_line(b"t UID THREAD orderedsubject utf-8 UNDELETED").args
    assert isinstance(args, rq.Thread) and args.algorithm == "ORDEREDSUBJECT" and args.uid
    search = parse_line(b"t SEARCH RETURN (UPDATE CONTEXT PARTIAL 1:10) SEEN").args
    assert search.return_opts == {"UPDATE", "PARTIAL"} and search.partial == (1, 10)
    assert parse_line(b't CANCELUPDATE "a" "b"').args == rq.CancelUpdate(("a", "b"))
    assert isinstance(parse_line(b"t SORT (DATE) X-UNKNOWN ALL"), rq.BadCharset)


# --- the store's sort keys ---------------------------------------------------------------------

MSG = b"From: Ann <ann@x.test>\r\nSubject: Re: Plans\r\nMessage-ID: <p@x>\r\n\r\nbody\r\n"


def test_store_keeps_keys_on_first_use_and_drops_them_with_the_body(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as st:
        box = st.mailbox("alice")
        uid = box.append("INBOX", MSG).uid
        db = box.dir / "mailbox.db"
        with sqlite3.connect(db) as c:  # a small message is analyzed on first use
            assert c.execute("SELECT count(*) FROM sortkeys").fetchone() == (0,)
        keys = box.sort_keys("INBOX", [uid, 99])
        assert list(keys) == [uid] and keys[uid] == sort_keys_from_header(MSG)
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT subject, reply, from_, msgid FROM sortkeys").fetchall()
        assert rows == [("PLANS", 1, "ANN", "p@x")]
        box.set_flags("INBOX", [uid], "+", ["\\Deleted"])
        box.expunge("INBOX")
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT count(*) FROM sortkeys").fetchone() == (0,)


def test_store_upgrade_fills_keys_lazily(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as st:
        box = st.mailbox("alice")
        uids = [box.append("INBOX", MSG).uid for _ in range(3)]
        db = box.dir / "mailbox.db"
    # What a schema-4 database (before sort keys) looks like: no sortkeys table.
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE sortkeys")
        c.execute("PRAGMA user_version=4")
    with SqliteMailStore(tmp_path) as st:
        box = st.mailbox("alice")
        keys = box.sort_keys("INBOX", uids)
        assert [keys[u].subject for u in uids] == ["PLANS"] * 3
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert c.execute("SELECT count(*) FROM sortkeys").fetchone() == (3,)


# --- commands in the session -------------------------------------------------------------------


def _session(*subjects_dates: tuple[str, str]) -> Client:
    c = Client().login()
    for n, (subject, date) in enumerate(subjects_dates):
        c.box.append(
            "INBOX",
            (
                f"From: u{n}@x\r\nSubject: {subject}\r\nDate: {date}\r\n"
                f"Message-ID: <{n}@x>\r\n\r\nbody\r\n"
            ).encode(),
        )
    c.select()
    return c


D1, D2, D3 = (
    "Mon, 1 Jan 2024 10:00:00 +0000",
    "Tue, 2 Jan 2024 10:00:00 +0000",
    "Wed, 3 Jan 2024 10:00:00 +0000",
)


def test_sort_esort_and_thread_commands() -> None:
    c = _session(("b", D2), ("a", D3), ("Re: b", D1), ("c", D1))
    assert "* SORT 2 1 3 4\r\nt OK" in c("t SORT (SUBJECT) UTF-8 ALL")
    assert "* SORT 4 3 1 2\r\n" in c("t SORT (DATE REVERSE SUBJECT) UTF-8 ALL")
    assert "* SORT 2 1\r\n" in c("t SORT (REVERSE DATE) UTF-8 1:2")
    out = c("t UID SORT RETURN (MIN MAX ALL COUNT) (REVERSE SUBJECT) UTF-8 ALL")
    assert '* ESEARCH (TAG "t") UID MIN 4 MAX 2 ALL 4,1,3,2 COUNT 4\r\n' in out
    assert '* ESEARCH (TAG "t") PARTIAL (2:3 1,3)\r\n' in c(
        "t SORT RETURN (PARTIAL 3:2) (REVERSE SUBJECT) UTF-8 ALL"
    )
    assert '* ESEARCH (TAG "t") PARTIAL (5:9 NIL)\r\n' in c(
        "t SORT RETURN (PARTIAL 5:9) (SUBJECT) UTF-8 ALL"
    )
    assert "* SORT\r\n" in c("t SORT (SUBJECT) UTF-8 SUBJECT nothing")
    assert "* THREAD (4)(1 3)(2)\r\n" in c("t THREAD REFERENCES UTF-8 ALL")
    assert "* THREAD (3 1)(4)(2)\r\n" in c("t THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert "* THREAD\r\n" in c("t THREAD REFERENCES UTF-8 DELETED")
    assert "t NO [BADCHARSET" in c("t SORT (DATE) X-UNKNOWN ALL")


def test_sort_save() -> None:
    c = _session(("b", D1), ("a", D1), ("c", D1))
    out = c("t SORT RETURN (SAVE MIN) (SUBJECT) UTF-8 ALL")
    assert '* ESEARCH (TAG "t") MIN 2\r\n' in out
    assert "* 2 FETCH (UID 2)" in c("t FETCH $ (UID)")
    out = c("t SORT RETURN (SAVE) (REVERSE SUBJECT) UTF-8 2:3")
    assert "ESEARCH" not in out and "t OK" in out  # SAVE alone answers nothing (RFC 5182)
    assert "* SEARCH 2 3\r\n" in c("t SEARCH $")


def test_search_partial() -> None:
    c = _session(("a", D1), ("b", D1), ("c", D1))
    assert '* ESEARCH (TAG "t") PARTIAL (2:9 2:3)\r\n' in c("t SEARCH RETURN (PARTIAL 2:9) ALL")
    assert '* ESEARCH (TAG "t") PARTIAL (4:4 NIL)\r\n' in c("t SEARCH RETURN (PARTIAL 4:4) ALL")


def test_search_context_updates_and_cancelupdate() -> None:
    c = _session(("a", D1), ("b", D1), ("c", D1), ("d", D1))
    assert '* ESEARCH (TAG "s1") ALL 1\r\n' in c("s1 SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT a")
    out = c("t STORE 3:4 +FLAGS (\\Seen)")
    assert '* ESEARCH (TAG "s1") ADDTO (0 3:4)\r\nt OK' in out
    # Expunged results leave before the EXPUNGE responses, with the numbers they had.
    out = c("t STORE 1,3 +FLAGS.SILENT (\\Deleted)") + c("t EXPUNGE")
    assert out.index('* ESEARCH (TAG "s1") REMOVEFROM (0 1,3)') < out.index("* 1 EXPUNGE")
    # No longer matching, still there: current numbers, after the other responses.
    out = c("t STORE 2 -FLAGS (\\Seen)")
    assert "* 2 FETCH" in out and '* ESEARCH (TAG "s1") REMOVEFROM (0 2)\r\nt OK' in out
    assert "t OK" in c('t CANCELUPDATE "s1"')
    assert "ESEARCH" not in c("t STORE 1 +FLAGS (\\Seen)")
    assert "t BAD" in c('t CANCELUPDATE "s1"')


def test_sort_context_positions() -> None:
    c = _session(("b", D1), ("d", D1), ("a", D1))
    assert '* ESEARCH (TAG "s") UID ALL 3,1\r\n' in c(
        "s UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN NOT SUBJECT d"
    )
    c.box.append("INBOX", b"Subject: c\r\n\r\nx\r\n")
    c.box.append("INBOX", b"Subject: 0\r\n\r\nx\r\n")
    out = c("t NOOP")
    assert '* ESEARCH (TAG "s") UID ADDTO (1 5 4 4)\r\n' in out
    out = c("t UID STORE 1 +FLAGS (\\Seen)")
    assert '* ESEARCH (TAG "s") UID REMOVEFROM (3 1)\r\n' in out
    # Selecting again ends the contexts.
    c.select()
    assert "ESEARCH" not in c("t STORE 1:* -FLAGS (\\Seen)")


def test_sort_context_removals_apply_in_turn() -> None:
    c = _session(("b", D1), ("d", D1), ("a", D1), ("c", D1))
    assert '* ESEARCH (TAG "s") UID ALL 3,1,4,2\r\n' in c(
        "s UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN"
    )
    c.box.set_flags("INBOX", [1], "+", ["\\Deleted"])
    c.box.expunge("INBOX", [1])
    c.box.set_flags("INBOX", [4], "+", ["\\Seen"])
    out = c("t NOOP")
    # b leaves from position 2 (before the EXPUNGE); then, in the list without b, c is
    # at position 2 too.
    assert out.index('* ESEARCH (TAG "s") UID REMOVEFROM (2 1)') < out.index("* 1 EXPUNGE")
    assert '* ESEARCH (TAG "s") UID REMOVEFROM (2 4)\r\n' in out
