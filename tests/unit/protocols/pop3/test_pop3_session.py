"""The sans-IO POP3 core: parser, framing and the session state machine, no sockets."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.protocols.pop3 import parser as p
from server.protocols.pop3.responses import stuff, top_of
from server.protocols.pop3.session import (
    Authenticate,
    Close,
    Maildrop,
    Pop3Session,
    Retrieve,
    Send,
    SessionSettings,
    State,
    Update,
    build_maildrop,
    unique_id,
)

MESSAGES = {
    10: b"Subject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n",
    11: b"Subject: two\r\nX: y\r\n\r\nbody\r\n",
    12: b".starts with a dot\r\n\r\n..two dots\r\n",
}


def plain(authzid: str, authcid: str = "mailctl-proxy", password: str = "s3cret") -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


class Driver:
    """Plays the I/O layer: answers the session's requests from MESSAGES."""

    def __init__(self, settings: SessionSettings | None = None, descending: bool = False) -> None:
        self.settings = settings or SessionSettings()
        self.session = Pop3Session(lambda: self.settings)
        self.descending = descending
        self.updates: list[Update] = []
        self.auth: list[Authenticate] = []
        self.closed = False
        self.login_error: str | None = None
        self.update_error: str | None = None

    def send(self, data: bytes) -> bytes:
        self.session.receive(data)
        out: list[bytes] = []
        while (action := self.session.next_action()) is not None:
            match action:
                case Send(chunks=chunks):
                    out.extend(chunks)
                case Authenticate():
                    self.auth.append(action)
                    if self.login_error:
                        self.session.auth_failed(self.login_error)
                    else:
                        drop = build_maildrop(
                            7, [(u, len(m)) for u, m in MESSAGES.items()], self.descending
                        )
                        self.session.auth_succeeded(action.authzid, drop)
                case Retrieve(uid=uid):
                    self.session.retrieved(MESSAGES[uid])
                case Update():
                    self.updates.append(action)
                    self.session.updated(self.update_error)
                case Close():
                    self.closed = True
        return b"".join(out)

    def login(self) -> bytes:
        return self.send(f"AUTH PLAIN {plain('alice')}\r\n".encode())


def logged_in(**kwargs: object) -> Driver:
    driver = Driver(**kwargs)  # type: ignore[arg-type]
    assert driver.login().startswith(b"+OK")
    return driver


# --- parser ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"stat", p.Stat()),
        (b"LiSt", p.List(None)),
        (b"LIST 3", p.List(3)),
        (b"top 2 0", p.Top(2, 0)),
        (b"UIDL 1", p.Uidl(1)),
        (b"PASS secret with spaces", p.Pass("secret with spaces")),
        (b"AUTH plain", p.Auth("PLAIN", None)),
        (b"AUTH PLAIN =", p.Auth("PLAIN", "=")),
        (b"AUTH", p.Auth(None, None)),
        (b"capa", p.Capa()),
    ],
)
def test_parse_valid(line: bytes, expected: p.Command) -> None:
    assert p.parse_command(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"XYZZY",
        b"RETR",
        b"RETR x",
        b"RETR 0",
        b"RETR -1",
        b"LIST 1 2",
        b"STAT 1",
        b"TOP 1",
        b"TOP 1 -2",
        b"DELE 1  ",
        b"RETR \xff",
        b"\x00",
        b" STAT",
        b"RETR 1" + b"1" * 41,
    ],
)
def test_parse_errors_have_reasons(line: bytes) -> None:
    result = p.parse_command(line)
    assert isinstance(result, p.ParseError) and result.message


def test_line_reader_splits_and_discards_long_lines() -> None:
    reader = p.LineReader(10)
    assert reader.feed(b"STAT\r\nLI") == [p.Line(b"STAT")]
    assert reader.feed(b"ST\nNOOP") == [p.Line(b"LIST")]
    events = reader.feed(b"x" * 20)
    assert events == [p.LineTooLong(24)]
    assert reader.feed(b"y" * 50) == []  # still the same long line, reported once
    assert reader.feed(b"zz\r\nQUIT\r\n") == [p.Line(b"QUIT")]


# --- framing -----------------------------------------------------------------------------
def test_stuffing_doubles_leading_dots_and_ends_with_crlf() -> None:
    assert stuff(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n"
    assert stuff(b"") == b""


def test_top_keeps_header_blank_line_and_n_lines() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top_of(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top_of(msg, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top_of(msg, 99) == msg
    assert top_of(b"A: 1\r\n", 3) == b"A: 1\r\n"


def test_unique_id_is_dovecot_style_and_printable() -> None:
    assert unique_id(0x5F3A2B1C, 1) == "000000015F3A2B1C"
    assert build_maildrop(1, [(1, 5), (3, 7)], descending=True) == Maildrop(
        1, (build_maildrop(1, [(3, 7)]).messages[0], build_maildrop(1, [(1, 5)]).messages[0])
    )


# --- session -----------------------------------------------------------------------------
def test_greeting_uses_banner_live() -> None:
    driver = Driver()
    assert driver.session.greeting() == b"+OK The Microsoft Exchange POP3 service is ready.\r\n"
    driver.settings = SessionSettings(banner="Hello")
    assert driver.session.greeting() == b"+OK Hello\r\n"


def test_login_with_initial_response_and_continuation() -> None:
    driver = Driver()
    assert driver.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    reply = driver.send(plain("bob").encode() + b"\r\n")
    assert reply == b"+OK bob has 3 messages (%d octets)\r\n" % sum(map(len, MESSAGES.values()))
    assert driver.auth == [Authenticate("PLAIN", "bob", "mailctl-proxy", "s3cret")]
    assert driver.session.state is State.TRANSACTION


def test_auth_cancel_bad_base64_and_unknown_mechanism() -> None:
    driver = Driver()
    driver.send(b"AUTH PLAIN\r\n")
    assert driver.send(b"*\r\n").startswith(b"-ERR")
    assert driver.send(b"AUTH PLAIN !!!\r\n").startswith(b"-ERR")
    assert driver.send(b"AUTH PLAIN " + base64.b64encode(b"no-nuls") + b"\r\n").startswith(b"-ERR")
    assert driver.send(b"AUTH CRAM-MD5\r\n").startswith(b"-ERR")
    assert driver.send(b"AUTH\r\n") == b"+OK Mechanisms follow\r\nPLAIN\r\n.\r\n"
    assert driver.auth == []


def test_failed_login_passes_the_resp_code_through() -> None:
    driver = Driver()
    driver.login_error = "[IN-USE] Maildrop is in use by another session"
    assert driver.login() == b"-ERR [IN-USE] Maildrop is in use by another session\r\n"
    assert driver.session.state is State.AUTHORIZATION


def test_user_pass_refused_at_the_back_end() -> None:
    driver = Driver()
    assert driver.send(b"USER alice\r\n").startswith(b"-ERR [AUTH]")
    assert driver.send(b"PASS x\r\n").startswith(b"-ERR [AUTH]")
    assert driver.send(b"APOP alice 0123\r\n").startswith(b"-ERR")
    assert driver.send(b"STAT\r\n").startswith(b"-ERR")
    assert driver.auth == []


def test_user_pass_when_enabled() -> None:
    driver = Driver(SessionSettings(user_pass=True))
    assert driver.send(b"PASS x\r\n").startswith(b"-ERR")
    assert driver.send(b"USER alice\r\n").startswith(b"+OK")
    assert driver.send(b"PASS pw with space\r\n").startswith(b"+OK")
    assert driver.auth == [Authenticate("USER", "alice", "alice", "pw with space")]


def test_capa_lists_the_extensions() -> None:
    reply = Driver().send(b"CAPA\r\n").decode()
    lines = reply.split("\r\n")
    assert lines[0].startswith("+OK") and lines[-2:] == [".", ""]
    for cap in (
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "EXPIRE NEVER",
        "LOGIN-DELAY 0",
        "IMPLEMENTATION mailctl",
    ):
        assert cap in lines


def test_stat_list_uidl() -> None:
    driver = logged_in()
    sizes = [len(m) for m in MESSAGES.values()]
    assert driver.send(b"STAT\r\n") == b"+OK 3 %d\r\n" % sum(sizes)
    assert driver.send(b"LIST\r\n") == (
        b"+OK 3 messages (%d octets)\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n" % (sum(sizes), *sizes)
    )
    assert driver.send(b"LIST 2\r\n") == b"+OK 2 %d\r\n" % sizes[1]
    assert driver.send(b"LIST 4\r\n").startswith(b"-ERR")
    assert driver.send(b"UIDL\r\n") == (
        b"+OK Unique-ID listing follows\r\n1 0000000A00000007\r\n2 0000000B00000007\r\n"
        b"3 0000000C00000007\r\n.\r\n"
    )
    assert driver.send(b"uidl 3\r\n") == b"+OK 3 0000000C00000007\r\n"


def test_descending_numbers_newest_first() -> None:
    driver = logged_in(descending=True)
    assert driver.send(b"UIDL 1\r\n") == b"+OK 1 0000000C00000007\r\n"
    assert driver.send(b"RETR 3\r\n").startswith(
        b"+OK %d octets\r\nSubject: one" % len(MESSAGES[10])
    )


def test_retr_is_byte_stuffed_with_exact_count() -> None:
    driver = logged_in()
    reply = driver.send(b"RETR 3\r\n")
    raw = MESSAGES[12]
    assert (
        reply
        == b"+OK %d octets\r\n" % len(raw) + b"..starts with a dot\r\n\r\n...two dots\r\n.\r\n"
    )
    assert driver.send(b"RETR 1\r\n").endswith(b"line 1\r\n..dot line\r\nline 3\r\n.\r\n")


def test_top() -> None:
    driver = logged_in()
    assert driver.send(b"TOP 1 0\r\n") == b"+OK Top of message follows\r\nSubject: one\r\n\r\n.\r\n"
    assert driver.send(b"TOP 1 2\r\n").endswith(b"\r\n\r\nline 1\r\n..dot line\r\n.\r\n")


def test_dele_rset_and_update() -> None:
    driver = logged_in()
    assert driver.send(b"DELE 1\r\n") == b"+OK Message 1 deleted\r\n"
    assert driver.send(b"DELE 1\r\n").startswith(b"-ERR")
    assert driver.send(b"RETR 1\r\n").startswith(b"-ERR")
    assert driver.send(b"STAT\r\n") == b"+OK 2 %d\r\n" % (len(MESSAGES[11]) + len(MESSAGES[12]))
    assert b"\r\n1 " not in driver.send(b"LIST\r\n")
    assert driver.send(b"RSET\r\n").startswith(b"+OK Maildrop has 3 messages")
    driver.send(b"RETR 2\r\nDELE 3\r\n")
    assert driver.send(b"QUIT\r\n") == b"+OK mailctl signing off (2 messages left)\r\n"
    assert driver.updates == [Update(delete=(12,), seen=(11,))]
    assert driver.closed and driver.session.state is State.CLOSED
    assert driver.send(b"STAT\r\n") == b""


def test_listings_are_kept_per_session_and_follow_dele_and_rset() -> None:
    driver = logged_in()
    uidl, listing = driver.send(b"UIDL\r\n"), driver.send(b"LIST\r\n")
    assert uidl == b"".join(
        [
            b"+OK Unique-ID listing follows\r\n",
            *(b"%d %s\r\n" % (n, unique_id(7, uid).encode()) for n, uid in enumerate(MESSAGES, 1)),
            b".\r\n",
        ]
    )
    assert listing.splitlines()[1:4] == [
        b"%d %d" % (n, len(m)) for n, m in enumerate(MESSAGES.values(), 1)
    ]
    assert driver.send(b"UIDL\r\nLIST\r\n") == uidl + listing
    driver.send(b"DELE 2\r\n")
    assert driver.send(b"UIDL\r\n") == uidl.replace(b"2 %s\r\n" % unique_id(7, 11).encode(), b"")
    assert driver.send(b"LIST\r\n").startswith(b"+OK 2 messages")
    assert b"\r\n2 " not in driver.send(b"LIST\r\n")
    driver.send(b"RSET\r\n")
    assert driver.send(b"UIDL\r\nLIST\r\n") == uidl + listing


def test_wire_ready_retrieval_is_sent_as_given() -> None:
    driver = logged_in()
    session = driver.session
    session.receive(b"RETR 2\r\n")
    assert isinstance(session.next_action(), Retrieve)
    data = MESSAGES[11]
    session.retrieved(data, wire_ready=True)
    action = session.next_action()
    assert isinstance(action, Send)
    assert action.chunks == (b"+OK %d octets\r\n" % len(data), data, b".\r\n")
    assert action.chunks[1] is data  # no copy


def test_update_failure_reports_sys_temp() -> None:
    driver = logged_in()
    driver.update_error = "some deleted messages not removed"
    driver.send(b"DELE 1\r\n")
    assert driver.send(b"QUIT\r\n") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert driver.closed


def test_quit_before_login_updates_nothing() -> None:
    driver = Driver()
    assert driver.send(b"QUIT\r\n").startswith(b"+OK")
    assert driver.closed and driver.updates == []


def test_pipelined_commands_answer_in_order() -> None:
    driver = Driver()
    reply = driver.send(f"CAPA\r\nAUTH PLAIN {plain('a')}\r\nSTAT\r\nNOOP\r\nQUIT\r\n".encode())
    statuses = [line for line in reply.split(b"\r\n") if line.startswith((b"+OK", b"-ERR"))]
    assert [s.split(b" ")[0] for s in statuses] == [b"+OK"] * 5
    assert statuses[2].startswith(b"+OK 3 ")


def test_too_long_command_gets_err_and_session_goes_on() -> None:
    driver = logged_in(settings=SessionSettings(max_command_size=40))
    assert driver.send(b"NOOP " + b"x" * 100 + b"\r\n").startswith(b"-ERR Command line too long")
    assert driver.send(b"X" * 10000 + b"\r\nNOOP\r\n") == (
        b"-ERR Command line too long (at most 40 octets)\r\n+OK\r\n"
    )


def test_auth_line_may_exceed_a_small_max_command_size() -> None:
    driver = Driver(SessionSettings(max_command_size=40))
    assert driver.login().startswith(b"+OK")


def test_commands_in_wrong_state() -> None:
    driver = logged_in()
    assert driver.send(b"AUTH PLAIN =\r\n") == b"-ERR Already logged in\r\n"
    assert driver.send(b"STLS\r\n").startswith(b"-ERR")
    assert driver.send(b"FOO\r\n").startswith(b"-ERR Unknown command")


# --- fuzz --------------------------------------------------------------------------------
TOKENS = st.sampled_from(
    [
        b"STAT",
        b"LIST",
        b"RETR",
        b"DELE",
        b"TOP",
        b"UIDL",
        b"RSET",
        b"NOOP",
        b"CAPA",
        b"AUTH",
        b"PLAIN",
        b"USER",
        b"PASS",
        b"QUIT",
        b"1",
        b"2",
        b"3",
        b"0",
        b"99",
        b"-1",
        b"=",
        b"*",
        b" ",
        b"\r\n",
        b"\n",
        b".",
        plain("x").encode(),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(TOKENS, st.binary(max_size=20)), max_size=40),
    st.lists(st.integers(1, 30), max_size=5),
)
def test_fuzz_session_never_breaks(chunks: list[bytes], cuts: list[int]) -> None:
    driver = Driver(SessionSettings(max_command_size=40))
    data = b"".join(chunks)
    for cut in cuts:  # random TCP segmentation
        head, data = data[:cut], data[cut:]
        reply = driver.send(head)
        assert not reply or reply.endswith(b"\r\n")
    reply = driver.send(data)
    assert not reply or reply.endswith(b"\r\n")
    for line in reply.split(b"\r\n"):
        assert len(line) <= 510


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_parser_returns_command_or_reason(line: bytes) -> None:
    result = p.parse_command(line.replace(b"\n", b""))
    assert isinstance(result, p.Command) or result.message


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"RETR 1", b"x" * 12, b"", b"\r", b"\n", b"\r\n", b"AB"]), max_size=30
    ),
    st.lists(st.integers(0, 20), max_size=8),
)
def test_line_reader_events_do_not_depend_on_segmentation(
    parts: list[bytes], cuts: list[int]
) -> None:
    """Whole lines take a shortcut past the buffer: the lines must be the same as when the
    same bytes come one at a time (a LineTooLong's length is what had arrived by then)."""
    data = b"".join(parts)
    one_by_one = p.LineReader(10)
    expected = [event for i in range(len(data)) for event in one_by_one.feed(data[i : i + 1])]
    reader = p.LineReader(10)
    got: list[p.Line | p.LineTooLong] = []
    for cut in cuts:
        head, data = data[:cut], data[cut:]
        got += reader.feed(head)
    got += reader.feed(data)
    assert [e if isinstance(e, p.Line) else None for e in got] == [
        e if isinstance(e, p.Line) else None for e in expected
    ]
