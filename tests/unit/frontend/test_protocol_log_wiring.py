"""What the front and back ends put in protocol-log lines (no sockets): command results,
request sizes across continuations, parameters without secrets."""

from __future__ import annotations

import base64

from server.backend.imap.server import log_parameters
from server.frontend.core import LogEntry, Policy
from server.frontend.imap import ImapLoginCore
from server.frontend.pop3 import Pop3LoginCore
from server.protocols.imap import requests as rq
from server.protocols.imap.reader import parse_line
from server.runtime.protocol_log import imap_result, pop3_result
from server.settings.types import LoginType

TLS = Policy(
    tls_active=True, tls_available=True, login_type=LoginType.SecureLogin, max_command_size=10240
)


def test_imap_result_needs_the_commands_own_tagged_line() -> None:
    assert imap_result(b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n", "a1") == "R=OK"
    assert imap_result(b"a2 NO [TRYCREATE] no\r\n", "a2") == "R=NO"
    assert imap_result(b"* BAD Unknown\r\n", None) == "R=BAD"
    assert imap_result(b"+ idling\r\n", "a3") is None
    assert imap_result(b"a30 OK done\r\n", "a3") is None
    assert imap_result(b"", "a1") is None


def test_pop3_result() -> None:
    assert pop3_result(b"+OK 2 messages\r\n") == "R=OK"
    assert pop3_result(b"-ERR [IN-USE] busy\r\n") == "R=ERR"
    assert pop3_result(b"+ \r\n") is None


def test_imap_front_end_entries_never_hold_the_password() -> None:
    core = ImapLoginCore("hi")
    core.receive(b"a1 CAPABILITY\r\na2 LOGIN alice {6}\r\n")
    core.next_event(TLS)
    assert core.log_entry(b"* CAPABILITY X\r\na1 OK CAPABILITY completed.\r\n") == LogEntry(
        "capability", "", 15, "R=OK"
    )
    cont = core.next_event(TLS)
    assert core.log_entry(cont.data) is None  # type: ignore[union-attr]
    core.receive(b"s3cret\r\n")
    request = core.next_event(TLS)
    assert request.password == "s3cret"  # type: ignore[union-attr]
    entry = core.log_entry(b"a2 OK Logged in.\r\n")
    assert entry is not None and (entry.command, entry.parameters) == ("login", "alice")
    assert entry.rqsize == len(b"a2 LOGIN alice {6}\r\ns3cret\r\n")
    assert "s3cret" not in repr(entry)


def test_imap_front_end_sasl_response_counts_toward_authenticate() -> None:
    core = ImapLoginCore("hi")
    core.receive(b"a1 AUTHENTICATE PLAIN\r\n")
    assert core.next_event(TLS).data == b"+ \r\n"  # type: ignore[union-attr]
    response = base64.b64encode(b"\0alice\0pw") + b"\r\n"
    core.receive(response)
    core.next_event(TLS)
    entry = core.log_entry(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert entry == LogEntry("authenticate", "PLAIN", 23 + len(response), "R=NO")


def test_pop3_front_end_entries() -> None:
    core = Pop3LoginCore("hi")
    core.receive(b"USER alice\r\nPASS s3cret word\r\n")
    core.next_event(TLS)
    assert core.log_entry(b"+OK\r\n") == LogEntry("user", "alice", 12, "R=OK")
    core.next_event(TLS)
    assert core.log_entry(b"-ERR [AUTH] Authentication failed.\r\n") == LogEntry(
        "pass", "", 18, "R=ERR"
    )
    core.receive(b"AUTH PLAIN\r\n")
    core.next_event(TLS)
    assert core.log_entry(b"+ \r\n") is None
    core.receive(b"AGFsaWNlAHB3\r\n")
    core.next_event(TLS)
    assert core.log_entry(b"+OK User successfully logged on.\r\n") == LogEntry(
        "auth", "PLAIN", 26, "R=OK"
    )


def test_back_end_parameters_name_sets_and_folders_only() -> None:
    fetch = parse_line(b"a UID FETCH 1:5 (BODY[])")
    assert isinstance(fetch, rq.Command) and log_parameters(fetch.args) == "1:5"
    copy = parse_line(b"a COPY 2 Archive")
    assert isinstance(copy, rq.Command) and log_parameters(copy.args) == "2 Archive"
    rename = parse_line(b"a RENAME Old New")
    assert isinstance(rename, rq.Command) and log_parameters(rename.args) == "Old New"
    search = parse_line(b'a SEARCH SUBJECT "secret plans"')
    assert isinstance(search, rq.Command) and log_parameters(search.args) == ""
    assert log_parameters(None) == ""
