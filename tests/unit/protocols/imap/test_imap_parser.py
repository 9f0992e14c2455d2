"""IMAP command reader: framing, literals, limits, line mode, and every command's arguments."""

from __future__ import annotations

import datetime as dt

import pytest

from server.protocols.imap import search as s
from server.protocols.imap.reader import CommandReader, parse_line
from server.protocols.imap.requests import (
    Append,
    Authenticate,
    BadCharset,
    Capability,
    Check,
    Close,
    Command,
    CommandTooLong,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchItem,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    LiteralTooLarge,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    NeedContinuation,
    Noop,
    ParseError,
    RawLine,
    Rename,
    Search,
    Section,
    Select,
    Starttls,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
)
from server.protocols.imap.seqset import SAVED, SeqSet


def drain(reader: CommandReader, data: bytes = b"") -> list:
    if data:
        reader.feed(data)
    return list(reader.events())


def args(line: bytes):
    event = parse_line(line)
    assert isinstance(event, Command), event
    return event.args


def error(line: bytes) -> ParseError:
    event = parse_line(line)
    assert isinstance(event, ParseError), event
    return event


# --- framing -----------------------------------------------------------------------------


def test_tag_and_name_are_kept_and_name_upper_cased() -> None:
    event = parse_line(b"A001 noop")
    assert event == Command("A001", "NOOP", Noop())


def test_pipelined_commands_come_out_one_at_a_time() -> None:
    reader = CommandReader()
    reader.feed(b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n")
    assert reader.next_event() == Command("a", "NOOP", Noop())
    assert reader.next_event() == Command("b", "CAPABILITY", Capability())
    assert reader.next_event() == Command("c", "LOGOUT", Logout())
    assert reader.next_event() is None


def test_partial_line_waits_for_more_bytes() -> None:
    reader = CommandReader()
    assert drain(reader, b"a NO") == []
    assert drain(reader, b"OP\r") == []
    assert drain(reader, b"\n") == [Command("a", "NOOP", Noop())]


def test_bare_lf_and_blank_lines_are_accepted() -> None:
    reader = CommandReader()
    assert drain(reader, b"\r\n\r\na NOOP\n") == [Command("a", "NOOP", Noop())]


def test_unknown_command_is_a_parse_error_with_tag() -> None:
    assert parse_line(b"a1 FROB x") == ParseError("a1", "Unknown command")


def test_invalid_tag_has_no_tag() -> None:
    assert parse_line(b"+ NOOP") == ParseError(None, "Invalid tag")
    assert parse_line(b"(a NOOP").tag is None


def test_missing_command() -> None:
    assert parse_line(b"a1") == ParseError("a1", "Missing command")


def test_extra_arguments_are_rejected() -> None:
    err = error(b"a NOOP now")
    assert err.name == "NOOP" and "extra" in err.message


def test_reader_goes_on_after_errors() -> None:
    reader = CommandReader()
    events = drain(reader, b"a FROB\r\nb FETCH\r\nc NOOP\r\n")
    assert [type(e) for e in events] == [ParseError, ParseError, Command]
    assert events[1].tag == "b" and events[1].name == "FETCH"


# --- literals ----------------------------------------------------------------------------


def test_sync_literal_asks_for_continuation() -> None:
    reader = CommandReader()
    assert drain(reader, b"a LOGIN {3}\r\n") == [NeedContinuation()]
    assert drain(reader, b"bob {6}\r\n") == [NeedContinuation()]
    assert drain(reader, b's3cr"t\r\n') == [Command("a", "LOGIN", Login("bob", 's3cr"t'))]


def test_non_sync_literal_needs_no_continuation() -> None:
    reader = CommandReader()
    assert drain(reader, b"a LOGIN {3+}\r\nbob {2+}\r\npw\r\n") == [
        Command("a", "LOGIN", Login("bob", "pw"))
    ]


def test_literal_may_contain_crlf_and_braces() -> None:
    data = b"line1\r\nline2 {5}\r\n"
    a = args(b"a APPEND INBOX {%d+}\r\n" % len(data) + data)
    assert isinstance(a, Append) and a.message == data


def test_everything_split_byte_by_byte() -> None:
    stream = (
        b"a LOGIN {3}\r\nbob pw\r\n"
        b"b APPEND Drafts (\\Draft) {5+}\r\nhello\r\n"
        b"c UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n"
    )
    reader = CommandReader()
    events = []
    for i in range(len(stream)):
        events.extend(drain(reader, stream[i : i + 1]))
    assert [type(e) for e in events] == [NeedContinuation, Command, Command, Command]
    assert events[1].args == Login("bob", "pw")
    assert events[2].args.message == b"hello"
    assert events[3].name == "UID FETCH"


def test_zero_length_literal() -> None:
    assert args(b"a LOGIN {0+}\r\n {0+}\r\n") == Login("", "")


def test_sync_literal_too_large_is_refused_without_continuation() -> None:
    reader = CommandReader(max_literal_size=100)
    assert drain(reader, b"a APPEND INBOX {101}\r\n") == [LiteralTooLarge("a", 101)]
    # The client never got "+", so the next thing it sends is a new command.
    assert drain(reader, b"b NOOP\r\n") == [Command("b", "NOOP", Noop())]


def test_non_sync_literal_too_large_is_skipped_with_rest_of_line() -> None:
    reader = CommandReader(max_literal_size=10)
    payload = b"x" * 20 + b"\r\nb NOOP\r\n"  # looks like a command, but it is literal data
    head = b"a APPEND INBOX {%d+}\r\n" % len(payload)
    events = drain(reader, head + payload + b" {3+}\r\nabc\r\nc NOOP\r\n")
    assert events == [LiteralTooLarge("a", len(payload)), Command("c", "NOOP", Noop())]


def test_literal_for_unknown_command_is_refused_before_reading() -> None:
    reader = CommandReader()
    assert drain(reader, b"a FROB {5}\r\n") == [ParseError("a", "Unknown command")]
    assert drain(reader, b"b NOOP\r\n") == [Command("b", "NOOP", Noop())]


def test_literal8_only_in_append() -> None:
    a = args(b"a APPEND INBOX ~{3+}\r\n\x00\x01\x02")
    assert a.messages[0].binary and a.message == b"\x00\x01\x02"
    assert "literal8" in error(b"a LOGIN ~{3+}\r\nbob pw").message


def test_huge_literal_announcement_is_too_large() -> None:
    reader = CommandReader()
    events = drain(reader, b"a APPEND INBOX {99999999999999999999999}\r\n")
    assert isinstance(events[0], LiteralTooLarge) and events[0].tag == "a"


def test_big_literal_is_read_in_chunks_linearly() -> None:
    size = 8 * 1024 * 1024
    reader = CommandReader(max_literal_size=size)
    assert drain(reader, b"a APPEND INBOX {%d}\r\n" % size) == [NeedContinuation()]
    chunk = b"y" * 65536
    for _ in range(size // len(chunk)):
        assert drain(reader, chunk) == []
    (event,) = drain(reader, b"\r\n")
    assert len(event.args.message) == size


# --- limits ------------------------------------------------------------------------------


def test_command_too_long_is_reported_before_the_line_ends() -> None:
    reader = CommandReader(max_command_size=1024)
    events = drain(reader, b"a1 LOGIN " + b"x" * 2000)
    assert events == [CommandTooLong("a1")]
    assert reader.buffered < 1024
    # the rest of that line is dropped as it comes
    assert drain(reader, b"y" * 5000) == []
    assert reader.buffered < 1024
    assert drain(reader, b"zzz\r\nb NOOP\r\n") == [Command("b", "NOOP", Noop())]


def test_command_too_long_counts_lines_across_literals() -> None:
    reader = CommandReader(max_command_size=1024)
    line = b"x" * 600
    events = drain(reader, b"a LOGIN {3+}\r\nbob " + line + b" {2+}\r\n" + line + b"\r\nb NOOP\r\n")
    assert events == [CommandTooLong("a"), Command("b", "NOOP", Noop())]


def test_literal_data_does_not_count_toward_command_size() -> None:
    reader = CommandReader(max_command_size=1024)
    data = b"z" * 5000
    (event,) = drain(reader, b"a APPEND INBOX {5000+}\r\n" + data + b"\r\n")
    assert event.args.message == data


def test_too_long_line_announcing_non_sync_literal_skips_it() -> None:
    reader = CommandReader(max_command_size=1024)
    events = drain(reader, b"a LOGIN " + b"u" * 1100 + b" {4+}\r\nNOOP\r\nb NOOP\r\n")
    assert events == [CommandTooLong("a"), Command("b", "NOOP", Noop())]


# --- line mode, STARTTLS -----------------------------------------------------------------


def test_line_mode_reads_idle_done_sent_in_the_same_packet() -> None:
    reader = CommandReader()
    reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert reader.next_event() == Command("a", "IDLE", Idle())
    reader.line_mode = True
    assert reader.next_event() == RawLine(b"DONE")
    reader.line_mode = False
    assert reader.next_event() == Command("b", "NOOP", Noop())


def test_line_mode_does_not_interpret_literal_markers() -> None:
    reader = CommandReader()
    reader.line_mode = True
    assert drain(reader, b"AGJvYgB{3}\r\n*\r\n") == [RawLine(b"AGJvYgB{3}"), RawLine(b"*")]


def test_line_mode_too_long() -> None:
    reader = CommandReader(max_command_size=1024)
    reader.line_mode = True
    assert drain(reader, b"A" * 3000) == [CommandTooLong(None)]
    assert drain(reader, b"A\r\nDONE\r\n") == [RawLine(b"DONE")]


def test_discard_buffer_drops_pipelined_plaintext() -> None:
    reader = CommandReader()
    reader.feed(b"a STARTTLS\r\nb LOGIN bob pw\r\n")
    assert reader.next_event() == Command("a", "STARTTLS", Starttls())
    assert reader.discard_buffer() == len(b"b LOGIN bob pw\r\n")
    assert reader.next_event() is None


# --- strings -----------------------------------------------------------------------------


def test_quoted_string_escapes() -> None:
    assert args(rb'a LOGIN "b\\o\"b" "p w"') == Login('b\\o"b', "p w")


def test_quoted_string_bad_escape_is_rejected() -> None:
    error(rb'a LOGIN "b\ob" pw')


def test_unterminated_quoted_string() -> None:
    err = error(b'a LOGIN "bob pw')
    assert err.message == "Expected user name"


def test_login_missing_password() -> None:
    assert error(b"a LOGIN bob").message == "Expected password"


# --- commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a CAPABILITY", Capability()),
        (b"a NOOP", Noop()),
        (b"a LOGOUT", Logout()),
        (b"a STARTTLS", Starttls()),
        (b"a CHECK", Check()),
        (b"a CLOSE", Close()),
        (b"a UNSELECT", Unselect()),
        (b"a NAMESPACE", Namespace()),
        (b"a IDLE", Idle()),
        (b"a EXPUNGE", Expunge()),
        (b"a UID EXPUNGE 3:5", Expunge(SeqSet(((3, 5),)), uid=True)),
        (b"a DELETE foo", Delete("foo")),
        (b"a SUBSCRIBE foo/bar", Subscribe("foo/bar")),
        (b'a UNSUBSCRIBE "a b"', Unsubscribe("a b")),
        (b"a RENAME old new", Rename("old", "new")),
        (b"a CREATE inbox", Create("INBOX")),
        (b"a CREATE Drafts (USE (\\Drafts))", Create("Drafts", ("\\Drafts",))),
        (b"a GETQUOTAROOT INBOX", GetQuotaRoot("INBOX")),
        (b'a GETQUOTA ""', GetQuota("")),
        (b"a ENABLE condstore qresync", Enable(("CONDSTORE", "QRESYNC"))),
        (b"a ID NIL", Id(None)),
        (b"a ID ()", Id({})),
        (b'a ID ("name" "mutt" "os" NIL)', Id({"name": "mutt", "os": None})),
        (b"a COPY 1:3 Trash", Copy(SeqSet(((1, 3),)), "Trash")),
        (b"a UID MOVE $ Archive", Move(SAVED, "Archive", uid=True)),
        (b'a LSUB "" *', Lsub("", "*")),
    ],
)
def test_command_arguments(line: bytes, expected: object) -> None:
    assert args(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"a CAPABILITY x",
        b"a DELETE",
        b"a RENAME one",
        b"a COPY x Trash",
        b"a COPY 0 Trash",
        b"a COPY 1",
        b"a ENABLE",
        b'a ID ("name")',
        b"a ID foo",
        b"a UID NOOP",
        b"a UID",
        b"a EXPUNGE 1",
        b"a CREATE x (USE \\Drafts)",
        b"a SELECT INBOX (FOO)",
        b"a DELETE {3+}\r\nabc junk",
    ],
)
def test_bad_arguments(line: bytes) -> None:
    error(line)


def test_uid_command_name() -> None:
    event = parse_line(b"t UID copy 1 x")
    assert event.name == "UID COPY" and event.args.uid


def test_mailbox_names_are_decoded_and_inbox_normalized() -> None:
    from server.protocols.imap.requests import InvalidMailboxName, invalid_mailbox_name

    assert args(b"a SELECT iNbOx").mailbox == "INBOX"
    assert args(b"a SELECT INBOX/Sub").mailbox == "INBOX/Sub"
    assert args(b"a DELETE &AMk-t&AOk-").mailbox == "\u00c9t\u00e9"
    assert args('a DELETE "Été"'.encode()).mailbox == "Été"
    # Not modified UTF-7, but a well-formed astring: not BAD (imaptest "atoms"); the session
    # answers NO and LIST lets such a pattern match nothing.
    bad = args(b"a DELETE &Jjo").mailbox
    assert isinstance(bad, InvalidMailboxName) and bad == "&Jjo"
    assert invalid_mailbox_name(args(b"a RENAME x &'+,-")) == "&'+,-"
    assert invalid_mailbox_name(args(b"a RENAME x y")) is None
    pattern = args(b'a LIST "" !#$&\'+,-.0123456789:;<=>?@^_`|[}%*').patterns[0]
    assert isinstance(pattern, InvalidMailboxName)


def test_login_keeps_raw_bytes_round_trippable() -> None:
    login = args(b'a LOGIN bob "\xff\xfe"')
    assert login.password.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_authenticate() -> None:
    assert args(b"a AUTHENTICATE plain") == Authenticate("PLAIN")
    assert args(b"a AUTHENTICATE PLAIN =") == Authenticate("PLAIN", b"")
    assert args(b"a AUTHENTICATE PLAIN AGJvYgBwdw==") == Authenticate("PLAIN", b"\0bob\0pw")
    assert "base64" in error(b"a AUTHENTICATE PLAIN AGJvYgBwdw=").message


def test_select_and_examine() -> None:
    assert args(b"a SELECT INBOX") == Select("INBOX")
    assert args(b"a EXAMINE INBOX") == Select("INBOX", readonly=True)
    assert Examine is Select
    assert args(b"a SELECT INBOX (CONDSTORE)") == Select("INBOX", condstore=True)


def test_select_qresync_full() -> None:
    sel = args(b"a SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 (1:5 41:45)))")
    assert sel.condstore
    q = sel.qresync
    assert (q.uidvalidity, q.modseq) == (67890007, 90060115194045000)
    assert str(q.known_uids) == "41:211,214:541"
    assert q.seq_match == (SeqSet(((1, 5),)), SeqSet(((41, 45),)))
    only_match = args(b"a EXAMINE INBOX (QRESYNC (1 2 (1 41)))").qresync
    assert only_match.known_uids is None and only_match.seq_match is not None
    assert args(b"a SELECT INBOX (QRESYNC (1 2))").qresync.known_uids is None
    error(b"a SELECT INBOX (QRESYNC (0 2))")
    error(b"a SELECT INBOX (QRESYNC (1 2 (1:* 41)))")


def test_list_basic() -> None:
    assert args(b'a LIST "" *') == List("", ("*",))
    assert args(b"a LIST ~/Mail/ %") == List("~/Mail/", ("%",))
    assert args(b'a LIST "" INBOX.%]') == List("", ("INBOX.%]",))
    assert args(b'a LIST "" inbox').patterns == ("inbox",)


def test_list_extended() -> None:
    lst = args(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent*") '
        b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT))"
    )
    assert lst.extended
    assert lst.selection_opts == {"SUBSCRIBED", "RECURSIVEMATCH"}
    assert lst.patterns == ("INBOX", "Sent*")
    assert lst.return_opts == {"CHILDREN", "SPECIAL-USE", "STATUS"}
    assert lst.status_items == ("MESSAGES", "UIDNEXT")
    assert args(b'a LIST "" * RETURN ()').extended
    assert args(b'a LIST () "" *').extended


@pytest.mark.parametrize(
    "line",
    [
        b'a LIST (RECURSIVEMATCH) "" *',
        b'a LIST (BOGUS) "" *',
        b'a LIST "" * RETURN (BOGUS)',
        b'a LIST "" * RETURN (STATUS ())',
        b'a LIST "" * NORETURN ()',
        b'a LIST ""',
    ],
)
def test_list_errors(line: bytes) -> None:
    error(line)


def test_status() -> None:
    st = args(b"a STATUS blurdybloop (UIDNEXT MESSAGES highestmodseq)")
    assert st == Status("blurdybloop", ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ"))
    error(b"a STATUS x (FOO)")
    error(b"a STATUS x ()")
    error(b"a STATUS x")


def test_append_with_flags_and_date() -> None:
    a = args(b'a APPEND saved-messages (\\Seen $Label) " 7-Feb-1994 21:52:25 -0800" {4+}\r\nabcd')
    assert a.mailbox == "saved-messages"
    assert a.flags == ("\\Seen", "$Label")
    assert a.date == dt.datetime(1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    assert a.message == b"abcd"


def test_multiappend() -> None:
    a = args(b"a APPEND INBOX {1+}\r\nx (\\Seen) {2+}\r\nyz")
    assert [(m.flags, m.data) for m in a.messages] == [((), b"x"), (("\\Seen",), b"yz")]


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX",
        b'a APPEND INBOX "hello"',
        b'a APPEND INBOX "31-Feb-2020 00:00:00 +0000" {1+}\r\nx',
        b'a APPEND INBOX "01-Foo-2020 00:00:00 +0000" {1+}\r\nx',
        b"a APPEND INBOX (\\Seen {1+}\r\nx",
    ],
)
def test_append_errors(line: bytes) -> None:
    error(line)


# --- STORE -------------------------------------------------------------------------------


def test_store_forms() -> None:
    assert args(b"a STORE 2:4 +FLAGS (\\Deleted)") == Store(
        SeqSet(((2, 4),)), "+", False, ("\\Deleted",)
    )
    assert args(b"a STORE 1 -flags.silent \\seen \\FLAGGED") == Store(
        SeqSet(((1, 1),)), "-", True, ("\\Seen", "\\Flagged")
    )
    assert args(b"a STORE 1 FLAGS ()") == Store(SeqSet(((1, 1),)), "", False, ())
    store = args(b"a UID STORE 1:* (UNCHANGEDSINCE 12345) FLAGS.SILENT (Junk)")
    assert store.uid and store.silent and store.unchangedsince == 12345
    assert store.flags == ("Junk",)


@pytest.mark.parametrize(
    "line",
    [
        b"a STORE 1 FLAG (\\Seen)",
        b"a STORE 1 +FLAGS",
        b"a STORE 1 +FLAGS (\\Seen",
        b"a STORE 1 (CHANGEDSINCE 1) FLAGS x",
        b"a STORE 1 FLAGS (\\)",
        b"a STORE 1 FLAGS.LOUD x",
    ],
)
def test_store_errors(line: bytes) -> None:
    error(line)


# --- FETCH -------------------------------------------------------------------------------


def names(fetch: Fetch) -> list[str]:
    return [i.response_name for i in fetch.items]


def test_fetch_macros() -> None:
    assert names(args(b"a FETCH 1 FAST")) == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert names(args(b"a FETCH 1 all")) == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert names(args(b"a FETCH 1 FULL"))[-1] == "BODY"
    error(b"a FETCH 1 (ALL)")


def test_fetch_simple_items() -> None:
    f = args(b"a FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE UID MODSEQ)")
    assert names(f) == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    ]
    assert all(i.section is None for i in f.items)
    assert args(b"a FETCH 1 uid").items == (FetchItem("UID", response_name="UID"),)


def test_fetch_rfc822_items_map_to_sections() -> None:
    rfc822, header, text = args(b"a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT)").items
    assert rfc822.section == Section() and rfc822.sets_seen
    assert header.section == Section((), "HEADER") and not header.sets_seen
    assert text.section == Section((), "TEXT") and text.sets_seen
    assert [rfc822.response_name, header.response_name] == ["RFC822", "RFC822.HEADER"]


def test_fetch_body_sections() -> None:
    items = args(
        b'a FETCH 1 (BODY[] BODY.PEEK[1.2.3] body[header.fields (from "X-Y")]<10.20> '
        b"BODY[2.HEADER.FIELDS.NOT (Subject)] BODY[3.MIME] BODY[4.TEXT] BODY[TEXT])"
    ).items
    assert [i.section for i in items] == [
        Section(),
        Section((1, 2, 3)),
        Section((), "HEADER.FIELDS", ("FROM", "X-Y")),
        Section((2,), "HEADER.FIELDS.NOT", ("SUBJECT",)),
        Section((3,), "MIME"),
        Section((4,), "TEXT"),
        Section((), "TEXT"),
    ]
    assert [i.response_name for i in items] == [
        "BODY[]",
        "BODY[1.2.3]",
        "BODY[HEADER.FIELDS (FROM X-Y)]<10>",
        "BODY[2.HEADER.FIELDS.NOT (SUBJECT)]",
        "BODY[3.MIME]",
        "BODY[4.TEXT]",
        "BODY[TEXT]",
    ]
    assert items[1].peek and not items[1].sets_seen
    assert items[2].partial == (10, 20)
    assert items[0].sets_seen


def test_fetch_odd_header_field_names_are_quoted_in_response_name() -> None:
    (item,) = args(b'a FETCH 1 BODY.PEEK[HEADER.FIELDS ("A]B" "C D")]').items
    assert item.response_name == 'BODY[HEADER.FIELDS ("A]B" "C D")]'


def test_fetch_binary() -> None:
    binary, size, peek = args(b"a FETCH 1 (BINARY[1]<0.5> BINARY.SIZE[2] BINARY.PEEK[])").items
    assert binary.name == "BINARY" and binary.section == Section((1,)) and binary.partial == (0, 5)
    assert binary.response_name == "BINARY[1]<0>"
    assert (
        size.name == "BINARY.SIZE" and not size.sets_seen and size.response_name == "BINARY.SIZE[2]"
    )
    assert peek.peek and peek.response_name == "BINARY[]"


def test_fetch_modifiers() -> None:
    f = args(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert f.changedsince == 12345 and f.vanished and f.uid
    assert args(b"a FETCH 1 FLAGS (CHANGEDSINCE 0)").changedsince == 0


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH",
        b"a FETCH 1",
        b"a FETCH 1 ()",
        b"a FETCH 1 (FLAGS",
        b"a FETCH 1 BOGUS",
        b"a FETCH 1 BODY.PEEK",
        b"a FETCH 1 BODY[HEADER",
        b"a FETCH 1 BODY[MIME]",
        b"a FETCH 1 BODY[0]",
        b"a FETCH 1 BODY[1.]",
        b"a FETCH 1 BODY[1..2]",
        b"a FETCH 1 BODY[FOO]",
        b"a FETCH 1 BODY[HEADER.FIELDS]",
        b"a FETCH 1 BODY[HEADER.FIELDS ()]",
        b"a FETCH 1 BODY[]<0>",
        b"a FETCH 1 BODY[]<0.0>",
        b"a FETCH 1 BINARY[HEADER]",
        b"a FETCH 1 FLAGS (VANISHED)",
        b"a UID FETCH 1 FLAGS (VANISHED)",
        b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)",
        b"a FETCH 1 FLAGS (FOO)",
        b"a FETCH 1 FLAGS ()",
        b"a FETCH *:0 FLAGS",
    ],
)
def test_fetch_errors(line: bytes) -> None:
    error(line)


# --- SEARCH ------------------------------------------------------------------------------


def test_search_plain() -> None:
    srch = args(b'a SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')
    assert srch == Search(
        s.AndKey(
            (
                s.FlagKey("\\Flagged"),
                s.DateKey("internal", "since", dt.date(1994, 2, 1)),
                s.NotKey(s.HeaderKey("From", "Smith")),
            )
        )
    )
    assert srch.return_opts is None


def test_search_return_and_charset() -> None:
    srch = args(b"a UID SEARCH RETURN (MIN MAX) CHARSET utf-8 TEXT {5+}\r\n\xc3\xa9t\xc3\xa9")
    assert srch.uid and srch.charset == "UTF-8" and srch.return_opts == {"MIN", "MAX"}
    assert srch.key == s.TextKey("\u00e9t\u00e9")
    assert args(b"a SEARCH RETURN () ALL").return_opts == {"ALL"}
    assert args(b"a SEARCH RETURN (SAVE) UNSEEN").return_opts == {"SAVE"}


def test_search_with_charset_decodes_strings() -> None:
    srch = args(b"a SEARCH CHARSET ISO-8859-1 SUBJECT {1+}\r\n\xe9")
    assert srch.key == s.HeaderKey("Subject", "\u00e9")


def test_search_invalid_utf8_with_explicit_charset_is_an_error() -> None:
    assert "UTF-8" in error(b"a SEARCH CHARSET UTF-8 BODY {1+}\r\n\xff").message


def test_search_bad_charset() -> None:
    assert parse_line(b"a SEARCH CHARSET X-NOPE ALL") == BadCharset("a", "SEARCH", "X-NOPE")
    assert parse_line(b"a UID SEARCH CHARSET rot13 ALL") == BadCharset("a", "UID SEARCH", "ROT13")


def test_search_errors() -> None:
    error(b"a SEARCH")
    error(b"a SEARCH RETURN (BOGUS) ALL")
    error(b"a SEARCH RETURN (MIN)")
    error(b"a SEARCH CHARSET")
    error(b"a SEARCH FOO")


# --- API spot checks ---------------------------------------------------------------------


def test_command_args_are_immutable() -> None:
    login = args(b"a LOGIN bob pw")
    with pytest.raises(AttributeError):
        login.user = "eve"  # type: ignore[misc]


def test_in_command_and_buffered() -> None:
    reader = CommandReader()
    assert not reader.in_command
    drain(reader, b"a LOGIN {3}\r\nbo")
    assert reader.in_command and reader.buffered >= 2


def test_literal_limit_covers_all_literals_of_a_command() -> None:
    reader = CommandReader(max_literal_size=10)
    events = drain(reader, b"a APPEND INBOX {6+}\r\nabcdef {6+}\r\nghijkl\r\nb NOOP\r\n")
    assert events == [LiteralTooLarge("a", 6), Command("b", "NOOP", Noop())]
    # the limit is an attribute the session may change between events
    reader.max_literal_size = 12
    (event,) = drain(reader, b"a APPEND INBOX {6+}\r\nabcdef {6+}\r\nghijkl\r\n")
    assert [m.data for m in event.args.messages] == [b"abcdef", b"ghijkl"]
