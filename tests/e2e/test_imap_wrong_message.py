"""A message appended after an EXPUNGE (or after DELETE and CREATE of its folder) is answered
with its own ENVELOPE, BODYSTRUCTURE, sections and SEARCH matches, through the front end to
the real back end and the SQLite store, never with those of the message it replaced."""

from __future__ import annotations

import imaplib

import pytest

from server.settings.paths import Home
from tests.e2e.frontend_support import PASSWORD, ports

FIRST = b"From: first@x.org\r\nSubject: FIRST\r\n\r\nfirst body\r\n"
SECOND = b"From: second@y.org\r\nSubject: SECOND\r\n\r\nsecond body, longer\r\n"


@pytest.fixture
def port(imap_site: Home) -> int:
    return ports(imap_site, "IMAP")[0]


def _client(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login("alice", PASSWORD)
    return client


def _fetch_first(client: imaplib.IMAP4) -> bytes:
    typ, data = client.fetch("1", "(ENVELOPE BODY.PEEK[TEXT] RFC822.SIZE)")
    assert typ == "OK"
    return b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data)


def test_append_after_expunge_is_served_as_itself(port: int) -> None:
    client = _client(port)
    client.create("zz2")
    client.select("zz2")
    client.append("zz2", None, None, FIRST)
    # The first message's metadata is looked at before it goes (what a client's
    # message list does), so any cache keyed on a reused identity would hold it.
    assert b'"FIRST"' in _fetch_first(client)
    client.store("1", "+FLAGS", "\\Deleted")
    client.expunge()
    client.append("zz2", None, None, SECOND)
    got = _fetch_first(client)
    assert b'"SECOND"' in got and b"FIRST" not in got
    assert b"BODY[TEXT] {21}second body, longer\r\n" in got  # literal joined to its line
    assert b"RFC822.SIZE %d" % len(SECOND) in got
    assert client.search(None, "FROM", "second")[1] == [b"1"]
    assert client.search(None, "FROM", "first")[1] == [b""]
    assert client.search(None, "BODY", "longer")[1] == [b"1"]
    client.logout()


def test_append_after_delete_and_create_of_the_folder(port: int) -> None:
    client = _client(port)
    client.create("zz3")
    client.select("zz3")
    client.append("zz3", None, None, FIRST)
    typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK" and b'"FIRST"' in data[0]
    client.unselect()
    client.delete("zz3")
    client.create("zz3")
    client.select("zz3")
    client.append("zz3", None, None, SECOND)
    typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK"
    assert b'"SECOND"' in data[0] and b"FIRST" not in data[0]
    # BODYSTRUCTURE's text/plain part: size and lines of the new body.
    assert b" 21 1 " in data[0]
    assert client.search(None, "SUBJECT", "SECOND")[1] == [b"1"]
    assert client.search(None, "SUBJECT", "FIRST")[1] == [b""]
    assert client.search(None, "TO", "x.org")[1] == [b""]
    client.logout()
