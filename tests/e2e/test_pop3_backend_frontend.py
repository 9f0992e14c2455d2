"""The real POP3 pair: poplib -> MSExchangePOP3 (front end) -> MSExchangePOP3BE -> store.

Pins the hand-over contract from the back end's side: the front end's PROXY header and
proxy login are accepted, and what the client sees after login is the back end."""

from __future__ import annotations

import poplib
from collections.abc import Iterator
from typing import Any

import pytest

from server.settings.models import POP3, POP3BE
from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, client_context, ports

pytestmark = pytest.mark.e2e

MESSAGE = b"From: a@contoso.test\r\nSubject: hello\r\n\r\n.dot\r\nbody\r\n"


@pytest.fixture
def pair(home: Home, in_process: Any) -> Iterator[Home]:
    add_mailboxes(home)
    store = open_store(home, "MBX01")
    try:
        for _ in range(2):
            store.mailbox("alice").append("INBOX", MESSAGE)
        with in_process(POP3BE, home), in_process(POP3, home):
            yield home
    finally:
        store.close()


def test_user_pass_through_the_front_end_reaches_the_mailbox(pair: Home) -> None:
    _, ssl_port = ports(pair, "POP")
    client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(pair))
    before = client.capa()  # the front end's, on a TLS connection before login
    client.user("alice")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    assert client.stat() == (2, 2 * len(MESSAGE))
    _, lines, _ = client.retr(1)
    assert b"".join(line + b"\r\n" for line in lines) == MESSAGE
    caps = client.capa()  # answered by the back end now
    assert {"TOP", "UIDL", "PIPELINING", "RESP-CODES"} <= set(caps)
    assert before == caps  # RFC 2449 section 5: the same capabilities in both states
    client.dele(1)
    assert client.quit().startswith(b"+OK")

    client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(pair))
    client.user("alice")
    client.pass_(PASSWORD)
    assert client.stat()[0] == 1
    second = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(pair))
    second.user("alice")
    # The back end answers [IN-USE] and the front end passes it on (RFC 2449 section 8.1.1:
    # the client may try again later; a [SYS/TEMP] would hide that the maildrop is busy).
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\] "):
        second.pass_(PASSWORD)
    client.quit()
    second.close()
