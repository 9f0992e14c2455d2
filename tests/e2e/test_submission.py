"""Client SMTP submission (MSExchangeFrontEndTransport) in-process, with smtplib, delivering
into the real mailbox store and relaying through a fake smart host."""

from __future__ import annotations

import os
import smtplib
import threading
import time
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from server.directory import proxy_secret
from server.settings import store
from server.settings.models import IMAP4BE, SUBMISSION, SendConnector
from server.settings.paths import Home
from server.store import open_store
from server.submission.queue import ORPHAN_GRACE, Recipient, Spool
from tests.conftest import wait_for
from tests.e2e.frontend_support import PASSWORD, client_context, free_port_plan, save
from tests.e2e.handover_support import ProxiedIMAP4
from tests.e2e.submission_support import (
    connector_port,
    inbox,
    login,
    message,
    set_connector,
)


def test_greeting_starttls_auth_and_local_delivery(env: Home, smtp_service: Any) -> None:
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    code, banner = client.ehlo("client.example")
    assert code == 250 and banner.startswith(b"mbx01.contoso.test")
    assert client.has_extn("starttls") and not client.has_extn("auth")
    assert client.has_extn("size") and client.esmtp_features["size"] == str(36 * 1024**2)
    with pytest.raises(smtplib.SMTPSenderRefused):  # authentication is required
        client.sendmail("bob@contoso.test", ["alice@contoso.test"], b"Subject: x\r\n\r\nx\r\n")
    client.starttls(context=client_context(env))
    client.ehlo("client.example")
    assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
    client.login("bob", PASSWORD)
    client.send_message(message("Bob <bob@contoso.test>", "alice@contoso.test"))
    client.quit()
    wait_for(lambda: len(inbox(env, "alice")) == 1)
    [raw] = inbox(env, "alice")
    assert raw.startswith(b"Received: from client.example ([127.0.0.1]) by mbx01.contoso.test")
    assert b"Subject: Hello\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert inbox(env, "bob") == []  # no copy in the sender's mailbox


def test_banner_from_connector(env: Home, smtp_service: Any) -> None:
    with smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10) as client:
        code, text = client.noop()
    set_connector(env, Banner="220 Welcome to the test relay")
    smtp_service.reload()
    client = smtplib.SMTP(timeout=10)
    code, text = client.connect("127.0.0.1", connector_port(env))
    assert (code, text) == (220, b"Welcome to the test relay")
    client.quit()


def test_send_as_is_enforced(env: Home, smtp_service: Any) -> None:
    client = login(env)
    with pytest.raises(smtplib.SMTPSenderRefused, match="5.7.60"):
        client.sendmail("alice@contoso.test", ["alice@contoso.test"], b"x\r\n")
    client.rset()
    with pytest.raises(smtplib.SMTPDataError, match="5.7.60"):
        client.send_message(
            message("alice@contoso.test", "alice@contoso.test"), from_addr="bob@contoso.test"
        )
    client.quit()
    assert inbox(env, "alice") == []


def test_recipient_rules_and_limits(env: Home, smtp_service: Any) -> None:
    client = login(env)
    client.mail("bob@contoso.test")
    code, text = client.rcpt("nobody@contoso.test")
    assert code == 550 and b"5.1.1" in text
    code, text = client.rcpt("someone@example.org")
    assert code == 550 and b"5.4.4" in text
    client.quit()
    set_connector(env, MaxRecipientsPerMessage=2, MaxMessageSize="2KB")
    smtp_service.reload()
    client = login(env)
    client.mail("bob@contoso.test")
    assert client.rcpt("alice@contoso.test")[0] == 250
    assert client.rcpt("bob@contoso.test")[0] == 250
    assert client.rcpt("carol@contoso.test")[0] == 452
    client.rset()
    with pytest.raises(smtplib.SMTPSenderRefused):  # SIZE= over the limit
        client.sendmail(
            "bob@contoso.test", ["alice@contoso.test"], b"x" * 5000, mail_options=["SIZE=5000"]
        )
    client.quit()


def test_auth_needs_tls_and_logon_failures_close(env: Home, smtp_service: Any) -> None:
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    client.ehlo()
    code, _ = client.docmd("AUTH", "PLAIN AGJvYgBQYTU1d29yZCE=")
    assert code == 538  # encryption required first
    client.starttls(context=client_context(env))
    client.ehlo()
    client.user, client.password = "bob", "wrong"
    for _ in range(2):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
    code, text = client.docmd("AUTH", "PLAIN AGJvYgB3cm9uZw==")
    assert code == 421  # MaxLogonFailures (3) reached
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_require_tls(env: Home, smtp_service: Any) -> None:
    set_connector(env, RequireTLS=True)
    smtp_service.reload()
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    client.ehlo()
    code, text = client.docmd("MAIL", "FROM:<bob@contoso.test>")
    assert code == 530
    client.quit()


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_relay_through_smart_host_with_retry(env: Home, in_process: Any) -> None:
    port = free_port_plan().submission
    settings = store.load(env).settings
    settings.SendConnectors["Internet"] = SendConnector(SmartHosts=[f"127.0.0.1:{port}"])
    save(env, settings)
    with in_process(SUBMISSION, env) as svc:
        svc.service.delivery.retry_base = 0.1
        client = login(env)
        client.send_message(message("bob@contoso.test", "friend@example.org"))
        client.quit()
        # the smart host is down: the message waits in the spool
        wait_for(
            lambda: any(
                r.attempts for e in svc.service.delivery._entries.values() for r in e.recipients
            )
        )
        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            wait_for(lambda: len(sink.messages) == 1)
        finally:
            controller.stop()
        sender, rcpts, content = sink.messages[0]
        assert (sender, rcpts) == ("bob@contoso.test", ["friend@example.org"])
        assert b"Received: from" in content
        wait_for(lambda: not list((env.queue / "MBX01").glob("*.json")))


def test_spooled_mail_survives_a_restart(env: Home, delivery: Any, in_process: Any) -> None:
    """What was accepted before a crash is delivered by the next start."""
    spool = Spool(env.queue / "MBX01")
    spool.add(
        "bob@contoso.test",
        [Recipient("alice@contoso.test", "alice", "MBX01")],
        b"Subject: left over\r\n\r\nbody\r\n",
        "bob",
    )
    (env.queue / "MBX01" / "orphan.eml").write_bytes(b"never acknowledged")
    old = time.time() - ORPHAN_GRACE - 1
    os.utime(env.queue / "MBX01" / "orphan.eml", (old, old))
    with in_process(SUBMISSION, env):
        wait_for(lambda: len(inbox(env, "alice")) == 1)
    assert inbox(env, "alice")[0] == b"Subject: left over\r\n\r\nbody\r\n"
    assert list((env.queue / "MBX01").iterdir()) == []


def test_local_delivery_failure_is_retried(env: Home, smtp_service: Any, monkeypatch: Any) -> None:
    delivery = smtp_service.service.delivery
    real = delivery.lmtp
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[3])
        if len(calls) == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(delivery, "lmtp", flaky)
    client = login(env)
    client.send_message(message("bob@contoso.test", "alice@contoso.test"))
    client.quit()
    wait_for(lambda: len(inbox(env, "alice")) == 1)
    assert len(calls) == 2


class SignallingSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.received.set()
        return reply


def test_receipt_spooled_by_the_imap_back_end_is_relayed_while_running(
    env: Home, in_process: Any
) -> None:
    """The IMAP back end writes a read receipt for an outside sender into the spool; the
    submission service, already running, picks it up at once and relays it."""
    sink = SignallingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port_plan().submission)
    controller.start()
    try:
        settings = store.load(env).settings
        settings.SendConnectors["Internet"] = SendConnector(
            SmartHosts=[f"127.0.0.1:{controller.port}"]
        )
        save(env, settings)
        asking = (
            b"From: Friend <friend@example.org>\r\nTo: alice@contoso.test\r\n"
            b"Subject: Did you read this?\r\nMessage-ID: <q1@example.org>\r\n"
            b"Disposition-Notification-To: Friend <friend@example.org>\r\n"
            b"\r\nPlease confirm.\r\n"
        )
        mail_store = open_store(env, "MBX01")
        try:
            mail_store.mailbox("alice").append("INBOX", asking)
        finally:
            mail_store.close()
        with in_process(SUBMISSION, env) as smtp_run, in_process(IMAP4BE, env) as imap_run:
            assert smtp_run.service.delivery.pending == 0
            conn = ProxiedIMAP4(
                "127.0.0.1",
                imap_run.service.bound_port(),
                secret=proxy_secret(env),
                mailbox="alice",
            )
            conn.select("INBOX")
            typ, _ = conn.fetch("1", "(BODY[])")  # a download, not a PEEK: the receipt goes
            assert typ == "OK"
            conn.logout()
            assert sink.received.wait(10), "the receipt was not relayed"
            wait_for(lambda: not list((env.queue / "MBX01").glob("*.json")))
    finally:
        controller.stop()
    [(sender, rcpts, content)] = sink.messages
    assert (sender, rcpts) == ("<>", ["friend@example.org"])  # RFC 8098 2.1: null sender
    assert b"report-type=disposition-notification" in content
    assert b"Original-Message-ID: <q1@example.org>" in content


def test_ehlo_advertises_pipelining_and_enhanced_status_codes(env: Home, smtp_service: Any) -> None:
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    code, _ = client.ehlo("client.example")
    assert code == 250
    assert client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")
    assert client.ehlo_resp is not None
    lines = client.ehlo_resp.split(b"\n")
    assert lines[0] == b"mbx01.contoso.test" and lines[-1] == b"HELP"  # EHLO lines get no code
    assert {b"PIPELINING", b"ENHANCEDSTATUSCODES"} <= set(lines)
    # RFC 2034: every other 2xx/4xx/5xx reply carries an enhanced code, aiosmtpd's own too.
    assert client.noop() == (250, b"2.0.0 OK")
    assert client.rset() == (250, b"2.0.0 OK")
    assert client.docmd("RCPT", "TO:<alice@contoso.test>")[1].startswith(b"5.7.0 ")  # no AUTH
    assert client.docmd("XYZZY") == (500, b'5.5.2 Error: command "XYZZY" not recognized')
    assert client.docmd("RSET", "now") == (501, b"5.5.4 Syntax: RSET")
    code, text = client.docmd("STARTTLS")
    assert (code, text) == (220, b"2.0.0 Ready to start TLS")
    client.close()
    with smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10) as client:
        assert client.helo("client.example") == (250, b"mbx01.contoso.test")
        assert client.quit() == (221, b"2.0.0 Bye")


def test_pipelined_commands_are_answered_in_order(env: Home, smtp_service: Any) -> None:
    client = login(env)
    client.ehlo("client.example")
    assert client.has_extn("pipelining")
    # RFC 2920 section 3.1: one batch up to DATA, each reply in turn, DATA's 354 last.
    client.send(
        b"MAIL FROM:<bob@contoso.test>\r\nRCPT TO:<alice@contoso.test>\r\n"
        b"RCPT TO:<nobody@contoso.test>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\n"
    )
    replies = [client.getreply() for _ in range(5)]
    assert [code for code, _ in replies] == [250, 250, 550, 250, 354]
    assert [text[:5] for _, text in replies[:4]] == [b"2.1.0", b"2.1.5", b"5.1.1", b"2.1.5"]
    client.send(
        b"Subject: Pipelined\r\nFrom: bob@contoso.test\r\n\r\nHi.\r\n.\r\n"
        b"NOOP\r\nMAIL FROM:<bob@contoso.test>\r\nRCPT TO:<nobody@contoso.test>\r\n"
        b"DATA\r\nQUIT\r\n"
    )
    replies = [client.getreply() for _ in range(6)]
    assert [code for code, _ in replies] == [250, 250, 250, 550, 503, 221]
    assert replies[0][1].startswith(b"2.6.0 Queued")
    assert replies[4][1].startswith(b"5.5.1 ")  # DATA with no recipient accepted is refused
    client.close()
    wait_for(lambda: len(inbox(env, "alice")) == 1 and len(inbox(env, "bob")) == 1)
    assert b"Subject: Pipelined\r\n" in inbox(env, "alice")[0]


def test_plaintext_pipelined_after_starttls_is_dropped(env: Home, smtp_service: Any) -> None:
    """RFC 3207 section 4.2: a command injected behind STARTTLS in the clear must not run
    inside the TLS session (with PIPELINING advertised, clients may batch up to STARTTLS)."""
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    client.ehlo("client.example")
    client.send(b"STARTTLS\r\nNOOP\r\n")
    assert client.getreply()[0] == 220
    client.sock = client_context(env).wrap_socket(client.sock, server_hostname="127.0.0.1")
    client.file = None
    # Had the injected NOOP run, its 250 would answer our NOOP and ours would answer QUIT.
    assert client.noop() == (250, b"2.0.0 OK")
    assert client.quit()[0] == 221


def test_auth_login_and_plain_with_and_without_initial_response(
    env: Home, smtp_service: Any
) -> None:
    for mechanism, initial in (("LOGIN", True), ("LOGIN", False), ("PLAIN", False)):
        client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
        client.starttls(context=client_context(env))
        client.ehlo()
        client.user, client.password = "bob", PASSWORD
        authobject = client.auth_login if mechanism == "LOGIN" else client.auth_plain
        code, text = client.auth(mechanism, authobject, initial_response_ok=initial)
        assert (code, text) == (235, b"2.7.0 Authentication successful"), mechanism
        client.quit()
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    client.starttls(context=client_context(env))
    client.ehlo()
    for mechanism in ("LOGIN", "PLAIN"):
        assert client.docmd("AUTH", f"{mechanism} not-base64!") == (
            501,
            b"5.5.2 Can't decode base64",
        )
    client.quit()


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs, no except Exception catches it."""


def test_delivery_after_a_crash_is_not_repeated(env: Home, delivery: Any, monkeypatch: Any) -> None:
    """Killed between the delivery service's reply and the spool's update, the next start
    must not deliver the message a second time: the delivery service knows the entry."""
    from server.settings import store as settings_store
    from server.submission.delivery import Delivery

    folder = env.queue / "MBX01"
    spool = Spool(folder)
    spool.add(
        "bob@contoso.test",
        [
            Recipient("alice@contoso.test", "alice", "MBX01"),
            Recipient("bob@contoso.test", "bob", "MBX01"),
        ],
        b"Subject: once\r\n\r\nbody\r\n",
        "bob",
    )
    settings = settings_store.load(env).settings
    first = Delivery(env, spool, lambda: settings)
    delivered: list[str] = []
    real_lmtp, real_update = first.lmtp, Spool.update

    def lmtp(*args: Any, **kwargs: Any) -> Any:
        replies = real_lmtp(*args, **kwargs)
        delivered.append(args[1])
        return replies

    def update(self: Spool, entry: Any) -> None:
        if delivered:
            raise Crash
        real_update(self, entry)

    monkeypatch.setattr(first, "lmtp", lmtp)
    monkeypatch.setattr(Spool, "update", update)
    [entry] = spool.load()
    with pytest.raises(Crash):
        first._attempt(entry)
    monkeypatch.setattr(Spool, "update", real_update)
    second = Delivery(env, Spool(folder), lambda: settings)
    [entry] = second.spool.load()
    assert len(entry.recipients) == 2  # the spool never heard of the delivery
    second._attempt(entry)
    assert len(inbox(env, "alice")) == 1
    assert len(inbox(env, "bob")) == 1
    assert list(folder.glob("*.json")) == []


def test_relay_after_a_crash_is_not_repeated(env: Home, monkeypatch: Any) -> None:
    """Killed later in a delivery pass (here: while handing over to a second smart host),
    the next start must not hand the message to the first smart host again."""
    from server.settings import store as settings_store
    from server.submission import delivery as delivery_module
    from server.submission.delivery import Delivery

    port = free_port_plan().submission
    settings = settings_store.load(env).settings
    for name, space in (("Org", "example.org"), ("Net", "example.net")):
        settings.SendConnectors[name] = SendConnector(
            AddressSpaces=[space], SmartHosts=[f"127.0.0.1:{port}"]
        )
    save(env, settings)
    settings = settings_store.load(env).settings
    folder = env.queue / "MBX01"
    spool = Spool(folder)
    spool.add(
        "bob@contoso.test",
        [Recipient("friend@example.org"), Recipient("pal@example.net")],
        b"From: bob@contoso.test\r\nSubject: once\r\n\r\nbody\r\n",
        "bob",
    )
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        real_relay = delivery_module.relay_through
        calls: list[int] = []

        def relay(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise Crash  # killed while talking to the second smart host
            return real_relay(*args, **kwargs)

        monkeypatch.setattr(delivery_module, "relay_through", relay)
        first = Delivery(env, spool, lambda: settings)
        [entry] = spool.load()
        with pytest.raises(Crash):
            first._attempt(entry)
        monkeypatch.setattr(delivery_module, "relay_through", real_relay)
        second = Delivery(env, Spool(folder), lambda: settings)
        for entry in second.spool.load():
            second._attempt(entry)
        rcpts = sorted(r for _, rs, _ in sink.messages for r in rs)
        assert rcpts == ["friend@example.org", "pal@example.net"]
    finally:
        controller.stop()
