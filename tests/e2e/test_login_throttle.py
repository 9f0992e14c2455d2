"""The failed-login slow-down on the wire (issue 13 item 2): thousands of failures on one
address or name change nothing but the wait (no OverflowError, no 500), every spelling of a
name shares the mailbox's counter, and the owner still logs in from another address."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.directory.throttle import LoginThrottle
from server.settings import store
from server.settings.models import IMAP4, SUBMISSION
from server.settings.paths import Home
from server.settings.types import LoginType
from tests.e2e.frontend_support import (
    PASSWORD,
    FakeBackend,
    client_context,
    configure,
    ports,
)

FAILURES = 5000


def fast_throttle() -> LoginThrottle:
    """The real rules at a hundredth of the waits, so thousands of failures stay cheap."""
    throttle = LoginThrottle(base=0.0001, cap=0.02)
    throttle.account_cap = 0.005
    return throttle


async def fail_many(throttle: LoginThrottle, ip: str, account: str) -> None:
    for _ in range(FAILURES):  # on the service's loop, as its sessions would
        throttle.failed(ip, account)


@pytest.fixture
def imap(env: Home, in_process: Any) -> Iterator[Any]:
    server = store.load(env).settings.Servers["MBX01"]
    configure(
        env, "IMAP", ProxyTargetPort=server.ImapBackEndPort, LoginType=LoginType.PlainTextLogin
    )
    with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndPort):
        with in_process(IMAP4, env) as svc:
            svc.service.logins.throttle = fast_throttle()
            yield svc


def test_imap_after_thousands_of_failures(env: Home, imap: Any) -> None:
    throttle = imap.service.logins.throttle
    imap.call(fail_many(throttle, "127.0.0.1", "bob"))
    plain, _ = ports(env, "IMAP")
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("bob", "wrong")  # an ordinary refusal, not a crashed session
        assert client.login("bob", PASSWORD)[0] == "OK"


def test_imap_every_spelling_counts_for_the_mailbox(env: Home, imap: Any) -> None:
    throttle = imap.service.logins.throttle
    plain, _ = ports(env, "IMAP")
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        for typed in ("x\\bob", "CONTOSO\\Bob"):
            quoted = '"' + typed.replace("\\", "\\\\") + '"'  # imaplib sends the name as given
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login(quoted, "wrong")
    # The mailbox's counter from anywhere took both failures: two failures -> 2 x base.
    assert throttle.delay("10.1.1.1", "bob") == pytest.approx(2 * throttle.base)
    assert throttle.delay("10.1.1.1", "x\\nobody") == 0


@pytest.fixture
def smtp(env: Home, in_process: Any) -> Iterator[Any]:
    with in_process(SUBMISSION, env) as svc:
        svc.service.logins.throttle = fast_throttle()
        yield svc


def test_smtp_auth_after_thousands_of_failures(env: Home, smtp: Any) -> None:
    smtp.call(fail_many(smtp.service.logins.throttle, "127.0.0.1", "bob"))
    port = store.load(env).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=client_context(env))
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("x\\bob", "wrong")
        assert refused.value.smtp_code == 535
        assert client.login("bob", PASSWORD)[0] == 235


class IMAP4From(imaplib.IMAP4):
    """imaplib from a chosen loopback source address (127.0.0.0/8 is all local on Linux)."""

    def __init__(self, source: str, port: int) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def test_a_stranger_cannot_lock_the_owner_out(env: Home, imap: Any) -> None:
    imap.service.logins.throttle = throttle = LoginThrottle()  # the real waits
    imap.call(fail_many(throttle, "127.0.0.1", "bob"))
    assert throttle.delay("127.0.0.1", "bob") == throttle.cap  # the guesser waits 8 s
    plain, _ = ports(env, "IMAP")
    started = time.monotonic()
    with IMAP4From("127.0.0.2", plain) as client:  # the owner, at home
        assert client.login("bob", PASSWORD)[0] == "OK"
    assert time.monotonic() - started < throttle.cap / 2  # at most account_cap (1 s) more
