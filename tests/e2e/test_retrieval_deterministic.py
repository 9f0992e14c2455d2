"""A converted message (MessageRetrievalMimeFormat) is the same bytes from the IMAP and the
POP3 back end (two processes) and across a restart, so a client that fetches it in pieces
gets one message."""

from __future__ import annotations

from typing import Any

import pytest

from server.directory import proxy_secret
from server.settings import store as settings_store
from server.settings.models import IMAP4BE, POP3BE
from server.store import open_store
from tests.e2e.handover_support import ProxiedIMAP4, ProxiedPOP3
from tests.unit.retrieval.test_retrieval import plain

pytestmark = pytest.mark.e2e


def imap_body(services: Any, section: str = "BODY.PEEK[]") -> bytes:
    port = services.settings.server("MBX01").ImapBackEndPort
    secret = proxy_secret(services.home)
    conn = ProxiedIMAP4("127.0.0.1", port, secret=secret, timeout=10)
    try:
        conn.select("INBOX")
        typ, data = conn.fetch("1", f"({section})")
        assert typ == "OK"
        return data[0][1]
    finally:
        conn.logout()


def pop_body(services: Any) -> bytes:
    port = services.settings.server("MBX01").PopBackEndPort
    secret = proxy_secret(services.home)
    conn = ProxiedPOP3("127.0.0.1", port, secret=secret, timeout=10)
    try:
        _, lines, _ = conn.retr(1)
        return b"".join(line + b"\r\n" for line in lines)
    finally:
        conn.quit()


def test_converted_message_is_the_same_from_imap_pop3_and_after_a_restart(services: Any) -> None:
    with settings_store.edit(services.home) as doc:
        doc.set(
            ("Mailboxes", "alice"), {"PrimarySmtpAddress": "alice@contoso.test", "Server": "MBX01"}
        )
        for protocol in ("ImapSettings", "PopSettings"):
            doc.set(
                ("Servers", "MBX01", protocol, "MessageRetrievalMimeFormat"),
                "HtmlAndTextAlternative",
            )
    raw = plain()
    mail = open_store(services.home, "MBX01")
    try:
        mail.mailbox("alice").append("INBOX", raw)
    finally:
        mail.close()
    services.start(IMAP4BE)
    services.start(POP3BE)
    first = imap_body(services)
    assert b"multipart/alternative" in first and b"text/html" in first  # it was converted
    head = imap_body(services, "BODY.PEEK[]<0.200>")
    assert pop_body(services) == first
    services.stop(IMAP4BE)
    services.start(IMAP4BE)
    assert imap_body(services) == first
    # A client resuming a download after the restart gets the rest of the same message.
    rest = imap_body(services, "BODY.PEEK[]<200.100000>")
    assert head + rest == first
