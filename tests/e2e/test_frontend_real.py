"""The whole path with the real services: clients -> front ends / submission -> real back
ends on two servers (127.0.0.2 and 127.0.0.3) -> the SQLite store. Clients only ever talk to
the front ends."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from server.settings import store
from server.settings.models import (
    DELIVERY,
    IMAP4,
    IMAP4BE,
    POP3,
    POP3BE,
    SUBMISSION,
    default_server,
)
from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import (
    PASSWORD,
    add_mailboxes,
    client_context,
    free_port_plan,
    make_home,
    ports,
    save,
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    settings = store.load(home).settings
    settings.Servers["MBX01"].BackEndAddress = "127.0.0.2"
    settings.Servers["MBX02"] = default_server(
        "MBX02", "mbx02.contoso.test", free_port_plan(backend_address="127.0.0.3")
    )
    settings.Mailboxes["alice"].Server = "MBX02"
    save(home, settings)
    return home


@pytest.fixture
def site(home: Home, in_process: Any) -> Iterator[dict[str, Any]]:
    """Back ends and delivery on both servers, front ends and submission on MBX01."""
    with ExitStack() as stack:
        running = {}
        for name, server in [
            (IMAP4BE, "MBX01"),
            (IMAP4BE, "MBX02"),
            (POP3BE, "MBX01"),
            (POP3BE, "MBX02"),
            (DELIVERY, "MBX01"),
            (DELIVERY, "MBX02"),
        ]:
            running[(name, server)] = stack.enter_context(in_process(name, home, server))
        for name in (IMAP4, POP3, SUBMISSION):
            running[(name, "MBX01")] = stack.enter_context(in_process(name, home, "MBX01"))
        yield running


def submission_port(home: Home) -> int:
    return store.load(home).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port


def send(home: Home, sender: str, to: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"{sender}@contoso.test", f"{to}@contoso.test", subject
    msg.set_content("Hello across the sites.\n")
    with smtplib.SMTP("127.0.0.1", submission_port(home), timeout=10) as client:
        client.starttls(context=client_context(home))
        client.login(sender, PASSWORD)
        client.send_message(msg)


def test_mail_sent_with_smtplib_reaches_an_idling_session_on_the_other_server(
    home: Home, site: Any
) -> None:
    _, imaps = ports(home, "IMAP")
    with IMAPClient("127.0.0.1", port=imaps, ssl_context=client_context(home), timeout=10) as c:
        c.login("alice", PASSWORD)
        assert b"IDLE" in c.capabilities()
        c.select_folder("INBOX")
        c.idle()
        send(home, "bob", "alice", "Across sites")
        responses = c.idle_check(timeout=10)
        c.idle_done()
        assert any(r[1] == b"EXISTS" for r in responses), responses
        [(uid, data)] = c.fetch(c.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()
        assert b"Across sites" in data[b"BODY[HEADER.FIELDS (SUBJECT)]"]
    # it is in the MBX02 database, not MBX01's
    mbx02 = open_store(home, "MBX02")
    try:
        assert mbx02.mailbox("alice").status("INBOX").messages == 1
    finally:
        mbx02.close()


def test_each_user_is_routed_to_their_server(home: Home, site: Any) -> None:
    plain, _ = ports(home, "IMAP")
    for user, server in (("bob", "MBX01"), ("alice", "MBX02")):
        mail_store = open_store(home, server)
        mail_store.mailbox(user).append("INBOX", f"Subject: on {server}\r\n\r\nx\r\n".encode())
        mail_store.close()
        with imaplib.IMAP4("127.0.0.1", plain) as client:
            client.starttls(client_context(home))
            typ, data = client.login(user, PASSWORD)
            assert b"Logged in" in data[0]
            assert b"IDLE" in client.capability()[1][0]  # answered by the back end now
            client.select("INBOX")
            typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert f"on {server}".encode() in data[0][1]
            client.logout()


def test_pop3_through_the_front_end(home: Home, site: Any) -> None:
    import poplib

    mail_store = open_store(home, "MBX02")
    mail_store.mailbox("alice").append("INBOX", b"Subject: pop me\r\n\r\nbody\r\n")
    mail_store.close()
    _, pop3s = ports(home, "POP")
    client = poplib.POP3_SSL("127.0.0.1", pop3s, context=client_context(home))
    client.user("alice")
    client.pass_(PASSWORD)
    assert client.stat()[0] == 1
    assert b"Subject: pop me" in b"\r\n".join(client.retr(1)[1])
    client.quit()


def test_backend_process_killed_mid_session(home: Home, in_process: Any, services: Any) -> None:
    services.start(IMAP4BE, "MBX01")
    _, imaps = ports(home, "IMAP")
    with in_process(IMAP4, home, "MBX01"):
        client = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=client_context(home))
        client.login("bob", PASSWORD)
        client.select("INBOX")
        os.kill(services.get(IMAP4BE, "MBX01").Pid, signal.SIGKILL)
        with pytest.raises(imaplib.IMAP4.abort):
            client.noop()
        assert client.untagged_responses.get("BYE")
        client.shutdown()
        # a new login is refused cleanly while it is down, and works once it is back
        client = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=client_context(home))
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            client.login("bob", PASSWORD)
        services.start(IMAP4BE, "MBX01")
        assert client.login("bob", PASSWORD)[0] == "OK"
        client.logout()


@pytest.mark.skipif(
    shutil.which("fetchmail") is None,
    reason="fetchmail is not installed (Debian package: fetchmail)",
)
def test_fetchmail_downloads_a_mailbox_through_the_pop3_front_end(
    home: Home, site: Any, tmp_path: Path
) -> None:
    mail_store = open_store(home, "MBX01")
    box = mail_store.mailbox("bob")
    for n in range(3):
        box.append(
            "INBOX", f"From: x@example.org\r\nSubject: fetch {n}\r\n\r\nbody {n}\r\n".encode()
        )
    mail_store.close()
    _, pop3s = ports(home, "POP")
    out = tmp_path / "delivered.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {pop3s}\n"
        f'  user "bob" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
        f'  ssl sslcertck sslcertfile "{home.certs / "mailctl-ca.pem"}"\n'
        '  sslcommonname "mbx01.contoso.test"\n'
        f"  nokeep mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    started = time.monotonic()
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "-v"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    text = out.read_text()
    assert all(f"Subject: fetch {n}" in text for n in range(3))
    mail_store = open_store(home, "MBX01")
    try:
        assert mail_store.mailbox("bob").status("INBOX").messages == 0  # nokeep: deleted
    finally:
        mail_store.close()
