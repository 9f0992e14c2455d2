"""MSExchangeDelivery end to end, in-process on real sockets: the LMTP hop behind the
proxy-secret hand-over, per-recipient replies, idempotency per spool entry, and submission
delivering through it (it never writes into the store itself)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from typing import Any

import pytest

from server.delivery import client as lmtp_client
from server.delivery import items
from server.directory import ProxySecret
from server.protocols import handover
from server.settings import store as settings_store
from server.settings.models import DELIVERY, SUBMISSION, Mailbox, default_server
from server.settings.paths import Home
from server.store import open_store
from tests.conftest import wait_for
from tests.e2e.frontend_support import client_context, free_port_plan, save
from tests.e2e.handover_support import hand_over, read_line
from tests.e2e.submission_support import inbox, login, message


def settings(home: Home) -> Any:
    return settings_store.load(home).settings


def lmtp(
    home: Home,
    rcpts: list[str],
    message: bytes,
    envid: str | None = None,
    mail_from: str = "bob@contoso.test",
) -> list[tuple[int, str]]:
    return lmtp_client.deliver(
        home, settings(home), "MBX01", "test", mail_from, rcpts, message, envid=envid, timeout=10
    )


def tls_socket(home: Home) -> ssl.SSLSocket:
    server = settings(home).Servers["MBX01"]
    raw = socket.create_connection((server.BackEndAddress, server.DeliveryPort), timeout=10)
    return client_context(home).wrap_socket(raw, server_hostname=server.Fqdn)


def test_per_recipient_replies_with_one_over_quota(env: Home, delivery: Any) -> None:
    with settings_store.edit(env) as doc:
        doc.set(("Mailboxes", "alice", "UseDatabaseQuotaDefaults"), False)
        doc.set(("Mailboxes", "alice", "ProhibitSendReceiveQuota"), "4KB")
    delivery.reload()
    message = b"Subject: hi\r\n\r\n" + b"x" * 6000 + b"\r\n.leading dot\r\n"
    replies = lmtp(env, ["alice@contoso.test", "nobody@contoso.test", "bob@contoso.test"], message)
    assert [code for code, _ in replies] == [552, 550, 250]
    assert replies[0][1].startswith("5.2.2 ") and replies[1][1].startswith("5.1.1 ")
    assert inbox(env, "alice") == [] and inbox(env, "bob") == [message]


def test_mailbox_of_another_server_is_refused(env: Home, delivery: Any) -> None:
    current = settings(env)
    current.Servers["MBX02"] = default_server("MBX02", "mbx02.contoso.test", free_port_plan())
    current.Mailboxes["dave"] = Mailbox(PrimarySmtpAddress="dave@contoso.test", Server="MBX02")
    save(env, current)
    delivery.reload()
    [(code, text)] = lmtp(env, ["dave@contoso.test"], b"Subject: x\r\n\r\nx\r\n")
    assert code == 550 and text.startswith("5.1.6 ") and "MBX02" in text


def test_same_envid_is_delivered_once(env: Home, delivery: Any) -> None:
    message = b"Subject: once\r\n\r\nbody\r\n"
    first = lmtp(env, ["alice@contoso.test"], message, envid="0001-entry")
    again = lmtp(env, ["alice@contoso.test", "bob@contoso.test"], message, envid="0001-entry")
    assert first[0][0] == again[0][0] == again[1][0] == 250
    assert "already" in again[0][1]
    assert inbox(env, "alice") == [message] and inbox(env, "bob") == [message]
    lmtp(env, ["alice@contoso.test"], message, envid="0002-entry")  # another entry: delivered
    assert len(inbox(env, "alice")) == 2


def test_commit_without_the_ledger_mark_is_not_delivered_again(
    env: Home,
    delivery: Any,
    monkeypatch: Any,
) -> None:
    """The append committed but the service failed before remembering it (as a kill -9
    would leave it): the retry finds the copy and does not deliver a second one."""
    ledger = delivery.service._ledger
    real_done = ledger.done
    calls: list[int] = []

    def failing_once(envid: str, mailbox: str) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk gone")
        real_done(envid, mailbox)

    monkeypatch.setattr(ledger, "done", failing_once)
    message = b"Subject: crash\r\n\r\nbody\r\n"
    [(code, _)] = lmtp(env, ["alice@contoso.test"], message, envid="0003-entry")
    assert code == 451  # temporary: the queue tries again
    [(code, text)] = lmtp(env, ["alice@contoso.test"], message, envid="0003-entry")
    assert code == 250 and "already" in text
    assert inbox(env, "alice") == [message]


def test_peer_without_the_secret_is_refused_before_lmtp(env: Home, delivery: Any) -> None:
    # Speaking LMTP at once: the service says nothing but its challenge, then closes.
    sock = tls_socket(env)
    assert read_line(sock).startswith(b"MCHO1 CHALLENGE LMTP MBX01 ")
    sock.sendall(b"LHLO attacker\r\nMAIL FROM:<x@y>\r\n")
    assert sock.recv(100) == b""
    sock.close()
    # A wrong secret: the service proves itself, then refuses the peer's proof.
    sock = tls_socket(env)
    with pytest.raises(ConnectionError) as closed:
        shake = handover.FrontendHandshake(b"not the secret", "LMTP", "MBX01", "x", b"")
        while True:
            line = read_line(sock)
            try:
                out = shake.on_line(line)
            except handover.ImpostorError:
                # We cannot check the service's proof without the secret; answer anyway.
                out = b"MCHO1 LOGIN eA " + b"A" * 16 + b" " + b"00" * 32 + b"\r\n"
                shake._state = "result"
            sock.sendall(out)
    assert b"220" not in str(closed.value).encode()
    sock.close()
    assert delivery.service.delivered == 0
    # With the secret, the same port speaks LMTP.
    assert lmtp(env, ["bob@contoso.test"], b"Subject: ok\r\n\r\nok\r\n")[0][0] == 250


def test_client_refuses_a_delivery_service_that_cannot_prove_itself(
    env: Home, delivery: Any
) -> None:
    class Stale:  # a sender with another secret than the delivery service's
        def cached(self) -> bytes:
            return b"another secret"

    with pytest.raises(lmtp_client.DeliveryUnavailable, match="proxy secret"):
        lmtp_client.deliver(
            env,
            settings(env),
            "MBX01",
            "test",
            "",
            ["bob@contoso.test"],
            b"Subject: x\r\n\r\nx\r\n",
            secret=Stale(),
        )  # type: ignore[arg-type]
    assert inbox(env, "bob") == []


def test_calendar_items_for_w3svc_only_after_the_hand_over(env: Home, delivery: Any) -> None:
    """W3SVC's one request (server/delivery/items.py): the calendar part of a message of this
    server's mailbox, NONE for anything else, nothing at all for a malformed request, and
    LMTP, not items, for every other caller."""
    from tests.unit.retrieval.test_retrieval import ICS, meeting_request

    mail = open_store(env, "MBX01")
    try:
        box = mail.mailbox("alice")
        uid = box.append("INBOX", meeting_request()).uid
        plain_uid = box.append("INBOX", b"Subject: plain\r\n\r\nno calendar\r\n").uid
        uidvalidity = box.status("INBOX").uidvalidity
    finally:
        mail.close()
    current = settings(env)
    current.Servers["MBX02"] = default_server("MBX02", "mbx02.contoso.test", free_port_plan())
    current.Mailboxes["dave"] = Mailbox(PrimarySmtpAddress="dave@contoso.test", Server="MBX02")
    save(env, current)
    delivery.reload()

    def fetch(mailbox: str, folder: int, item: int) -> str | None:
        return asyncio.run(
            items.fetch(env, settings(env), "MBX01", mailbox, folder, item, ProxySecret(env))
        )

    ics = fetch("alice", uidvalidity, uid)
    assert ics is not None and ics.replace("\r\n", "\n") == ICS.replace("\r\n", "\n")
    assert fetch("alice", uidvalidity, plain_uid) is None  # no calendar part
    assert fetch("alice", uidvalidity + 1, uid) is None and fetch("alice", uidvalidity, 999) is None
    assert fetch("dave", uidvalidity, uid) is None  # on another server
    assert fetch("nobody", uidvalidity, uid) is None
    secret = ProxySecret(env).load()
    # A proved W3SVC that sends anything but one ITEM line gets no answer.
    for junk in (b"MAIL FROM:<a@b>\r\n", b"ITEM YWxpY2U 1 1\r\nITEM YWxpY2U 1 2\r\n", b"x" * 2000):
        sock = tls_socket(env)
        hand_over(sock, secret, items.READER, items.PROTOCOL)
        sock.sendall(junk)
        try:
            answer = sock.recv(100)
        except ConnectionResetError:  # closed with some of the junk unread: no answer either
            answer = b""
        assert answer == b""
        sock.close()
    # Another caller gets LMTP, where ITEM is no command.
    sock = tls_socket(env)
    hand_over(sock, secret, "MSExchangeFrontEndTransport", items.PROTOCOL)
    assert read_line(sock).startswith(b"220 ")
    sock.sendall(items.request("alice", uidvalidity, uid))
    assert read_line(sock)[:1] == b"5"
    sock.close()


def test_submission_waits_for_the_delivery_service_then_delivers_through_it(
    env: Home,
    in_process: Any,
) -> None:
    with in_process(SUBMISSION, env) as smtp_run:
        queue = smtp_run.service.delivery
        queue.retry_base = 0.05
        with login(env) as client:
            client.send_message(message("bob@contoso.test", "alice@contoso.test"))
        # MSExchangeDelivery is stopped: a temporary failure, the message stays queued.
        wait_for(lambda: any(r.attempts for e in queue._entries.values() for r in e.recipients))
        [entry] = queue._entries.values()
        assert "DeliveryUnavailable" in entry.recipients[0].last_error
        assert list((env.queue / "MBX01").glob("*.json")) and inbox(env, "alice") == []
        with in_process(DELIVERY, env) as delivery_run:
            wait_for(lambda: delivery_run.service.delivered == 1)
            assert len(inbox(env, "alice")) == 1
            wait_for(lambda: not list((env.queue / "MBX01").glob("*.json")))
    assert b"Subject: Hello" in inbox(env, "alice")[0]


def test_over_quota_recipient_bounces_and_the_other_gets_it(env: Home, in_process: Any) -> None:
    with settings_store.edit(env) as doc:
        doc.set(("Mailboxes", "alice", "UseDatabaseQuotaDefaults"), False)
        doc.set(("Mailboxes", "alice", "ProhibitSendReceiveQuota"), "1KB")
    with in_process(DELIVERY, env), in_process(SUBMISSION, env) as smtp_run:
        smtp_run.service.delivery.retry_base = 0.05
        msg = message("bob@contoso.test", "alice@contoso.test, carol@contoso.test")
        msg.set_content("y" * 3000)
        with login(env) as client:
            client.send_message(msg)
        wait_for(lambda: len(inbox(env, "carol")) == 1 and len(inbox(env, "bob")) == 1)
    [ndr] = inbox(env, "bob")
    assert b"Undeliverable" in ndr and b"552 5.2.2" in ndr and b"alice@contoso.test" in ndr
    assert inbox(env, "alice") == []
    assert not list((env.queue / "MBX01").glob("*.json"))


def test_delivery_ledger_is_owner_only(env: Home, delivery: Any) -> None:
    path = env.database("MBX01") / "delivered.sqlite"
    assert path.exists() and os.stat(path).st_mode & 0o077 == 0


def test_real_processes_submission_hands_mail_to_the_delivery_service(
    env: Home, services: Any
) -> None:
    """mailctl starts, shows and stops MSExchangeDelivery; a message submitted with
    STARTTLS and AUTH reaches the INBOX through it (its log says so), and with it stopped the
    message stays queued with a temporary failure."""
    runner = services
    runner.run_ok("start-service", DELIVERY)
    runner.run_ok("start-service", SUBMISSION)
    [row] = json.loads(runner.run_ok("get-service", DELIVERY, "--output", "json").stdout)
    port = settings(runner.home).Servers["MBX01"].DeliveryPort
    assert (
        row["Status"] == "Running"
        and row["DisplayName"] == "Microsoft Exchange Mailbox Transport Delivery"
    )
    assert row["Endpoints"] == [f"127.0.0.1:{port} (SSL)"]

    def send(subject: str) -> None:
        with login(runner.home) as client:
            client.send_message(message("bob@contoso.test", "alice@contoso.test", subject))

    send("first")
    wait_for(lambda: len(inbox(runner.home, "alice")) == 1, timeout=20)
    log_file = runner.home.logs / f"MBX01.{DELIVERY}.log"
    # The delivery service logs right after the append: wait for the line, not the INBOX.
    wait_for(lambda: "event=lmtp-delivery" in log_file.read_text(), timeout=20)
    log = log_file.read_text()
    assert "to=alice@contoso.test" in log and "reply='250 2.1.5" in log
    assert "caller=MSExchangeFrontEndTransport" in log

    runner.run_ok("stop-service", DELIVERY)
    send("second")
    spool = runner.home.queue / "MBX01"

    def deferred() -> bool:
        entries = [json.loads(p.read_text()) for p in spool.glob("*.json")]
        return any(
            r["attempts"] and "DeliveryUnavailable" in r["last_error"]
            for e in entries
            for r in e["recipients"]
        )

    wait_for(deferred, timeout=20)
    assert len(inbox(runner.home, "alice")) == 1
