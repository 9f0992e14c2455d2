"""Two hosts of one organization (issue 16), as network namespaces (multihost_support.py):
a mailbox on host B read over IMAP4 and POP3 through host A's front ends, mail submitted on
A delivered over LMTP to B, a settings change made on A in force on B, and a directory
that stops and starts again under running services."""

from __future__ import annotations

import email.message
import imaplib
import json
import poplib
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.multihost_support import PASSWORD, Host, Organization, two_hosts, wait_for

pytestmark = pytest.mark.e2e
SETTINGS_DEADLINE = 2.0  # seconds from a change on one host to its being in force on the other


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Organization]:
    with two_hosts(tmp_path_factory.mktemp("multihost")) as org:
        org.a.mailctl("new-mailbox", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        org.a.mailctl(
            "new-mailbox", "bob", "--server", "MBX02", "--password-stdin", stdin=PASSWORD + "\n"
        )
        yield org


def imap(host: Host, user: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(host.address, 993, ssl_context=host.client_context(), timeout=30)
    client.login(user, PASSWORD)
    return client


def pop(host: Host, user: str) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(host.address, 995, context=host.client_context(), timeout=30)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def message(subject: str, to: str = "bob@contoso.test") -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@contoso.test", to, subject
    msg.set_content(f"{subject}\n")
    return msg


def mailbox_files(host: Host, server: str) -> list[Path]:
    folder = host.home / "data" / server
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_a_mailbox_on_b_is_read_through_a(org: Organization) -> None:
    # The hop from A's front end to B's back end checks B's certificate (the organization's
    # CA, B's Fqdn): setup turned EnforceCertificateErrors on for every server.
    for protocol in ("imap", "pop"):
        shown = org.a.mailctl(f"get-{protocol}settings", "--server", "MBX02", "--output", "json")
        assert json.loads(shown.stdout)["EnforceCertificateErrors"] is True
    client = imap(org.a, "bob")
    try:
        typ, _ = client.append("INBOX", "", None, message("through A").as_bytes())
        assert typ == "OK"
        client.select("INBOX")
        typ, data = client.search(None, "SUBJECT", '"through A"')
        assert typ == "OK" and data[0]
    finally:
        client.logout()
    # Host A's front end relayed to host B's back end: the mailbox is on B alone.
    assert mailbox_files(org.b, "MBX02")
    assert not mailbox_files(org.a, "MBX02")
    box = pop(org.a, "bob")
    try:
        count, _ = box.stat()
        bodies = [b"\n".join(box.retr(i + 1)[1]) for i in range(count)]
        assert any(b"Subject: through A" in body for body in bodies)
    finally:
        box.quit()


def test_mail_submitted_on_a_is_delivered_to_b(org: Organization) -> None:
    with smtplib.SMTP(org.a.address, 587, timeout=30) as smtp:
        smtp.starttls(context=org.a.client_context())
        smtp.login("alice", PASSWORD)
        smtp.send_message(message("submitted on A"))

    def arrived() -> bool:
        client = imap(org.b, "bob")  # B's own front end: it is in B's store
        try:
            client.select("INBOX", readonly=True)
            _, data = client.search(None, "SUBJECT", '"submitted on A"')
            return bool(data[0])
        finally:
            client.logout()

    wait_for("the message in bob's INBOX on B", arrived)
    delivery = org.b.mailctl("get-service", "MSExchangeDelivery", "--output", "json").stdout
    assert "Running" in delivery


def greeting(host: Host) -> bytes:
    ctx = host.client_context()
    import socket

    with socket.create_connection((host.address, 993), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.recv(4096)


def test_a_settings_change_on_a_is_in_force_on_b(org: Organization) -> None:
    banner = f"MBX02 banner set on host A {time.monotonic_ns()}"
    org.a.mailctl("set-imapsettings", "--server", "MBX02", "--banner", banner)
    changed = time.monotonic()
    wait_for(
        "B's IMAP4 front end greeting with the new banner",
        lambda: banner.encode() in greeting(org.b),
        deadline=SETTINGS_DEADLINE,
    )
    print(f"in force on B {time.monotonic() - changed:.2f} s after mailctl returned on A")
    shown = org.b.mailctl("get-imapsettings", "--output", "json").stdout
    assert banner in shown  # B's mailctl, without -Server, is about MBX02


def test_two_admins_at_once_lose_nothing(org: Organization) -> None:
    import concurrent.futures

    def admin(host: Host, protocol: str, server: str, rounds: int) -> None:
        for i in range(rounds):
            host.mailctl(
                f"set-{protocol}settings", "--server", server, "--banner", f"{host.name}-{i}"
            )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = [
            pool.submit(admin, org.a, "imap", "MBX01", 4),
            pool.submit(admin, org.b, "pop", "MBX02", 4),
            pool.submit(admin, org.a, "pop", "MBX01", 4),
            pool.submit(admin, org.b, "imap", "MBX02", 4),
        ]
        for job in jobs:
            job.result()
    expected = {
        ("imap", "MBX01"): "MBX01-3",
        ("pop", "MBX02"): "MBX02-3",
        ("pop", "MBX01"): "MBX01-3",
        ("imap", "MBX02"): "MBX02-3",
    }

    def everywhere() -> bool:
        for host in org.hosts:
            for (protocol, server), banner in expected.items():
                shown = host.mailctl(
                    f"get-{protocol}settings", "--server", server, "--output", "json"
                ).stdout
                if f'"{banner}"' not in shown:
                    return False
        return True

    wait_for("every admin's last change on both hosts", everywhere, deadline=30)


def test_connectivity_test_on_a_for_a_mailbox_on_b(org: Organization) -> None:
    # What an admin runs on host A: log in through A, submit on A (LMTP to B), retrieve.
    shown = org.a.mailctl(
        "Test-ImapConnectivity", "-ConnectionType", "Ssl", "-TrustAnySSLCertificate",
        "-MailboxCredential", "bob", "--output", "json", stdin=PASSWORD + "\n",
    ).stdout  # fmt: skip
    assert [row["Result"] for row in json.loads(shown)] == ["Success"] * 3, shown


def test_directory_outage_gives_temporary_failures_then_recovers(org: Organization) -> None:
    org.slapd.stop()
    try:
        client = imaplib.IMAP4_SSL(
            org.a.address, 993, ssl_context=org.a.client_context(), timeout=30
        )
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client.login("bob", PASSWORD)
        client.shutdown()
        box = poplib.POP3_SSL(org.a.address, 995, context=org.a.client_context(), timeout=30)
        box.user("bob")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            box.pass_(PASSWORD)
        box.close()
        with smtplib.SMTP(org.a.address, 587, timeout=30) as smtp:
            smtp.starttls(context=org.a.client_context())
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                smtp.login("alice", PASSWORD)
            assert refused.value.smtp_code == 454 and b"4.7.0" in refused.value.smtp_error
        # A settings change cannot be published: refused cleanly, nothing changed.
        result = org.a.mailctl("set-imapsettings", "--banner", "while down", check=False)
        assert result.returncode != 0 and "cannot be reached" in result.stderr
        assert "while down" not in (org.a.home / "settings.toml").read_text()
    finally:
        org.slapd.start()
    # The same services, not restarted, log in again once the directory is back.
    wait_for(
        "an IMAP4 login through A after the directory came back",
        lambda: imap(org.a, "bob").logout(),
    )
    box = wait_for("a POP3 login through A", lambda: pop(org.a, "bob"))
    box.quit()


class IdleSession:
    """A raw IMAP client IDLE on INBOX through a host's front end, keeping what it is told."""

    def __init__(self, host: Host, user: str) -> None:
        import socket

        raw = socket.create_connection((host.address, 993), timeout=120)
        self.sock = host.client_context().wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        self.lines = [self.file.readline()]
        for tag, command in ((b"a", b"LOGIN " + user.encode() + b" " + PASSWORD.encode()),
                             (b"b", b"SELECT INBOX")):  # fmt: skip
            self.sock.sendall(tag + b" " + command + b"\r\n")
            while not (line := self.file.readline()).startswith(tag + b" "):
                assert line, "closed"
            assert line.split()[1] == b"OK", line
        self.sock.sendall(b"c IDLE\r\n")
        assert self.file.readline().startswith(b"+")

    def until_closed(self) -> list[bytes]:
        while line := self.file.readline():
            self.lines.append(line)
        self.sock.close()
        return self.lines


def subjects(host: Host, user: str) -> dict[str, set[bytes]]:
    client = imap(host, user)
    try:
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        client.logout()
    out = {}
    for item in data:
        if isinstance(item, tuple):
            flags = set(imaplib.ParseFlags(item[0])) - {b"\\Recent"}
            out[item[1].decode().split(":", 1)[1].strip()] = flags
    return out


def move_status(host: Host, user: str) -> str | None:
    import json

    shown = host.mailctl("get-moverequeststatistics", user, "--output", "json").stdout
    [request] = json.loads(shown)
    assert request["Status"] != "Failed", request
    return request["Status"]


# A message that meets the fence waits for the submission spool's next try, a minute later.
@pytest.mark.timeout(400)
def test_a_move_from_b_to_a_while_a_client_idles_loses_no_message(org: Organization) -> None:
    """New-MoveRequest on host A for a mailbox on host B: A's MSExchangeMailboxReplication
    reads it through B's, mail submitted on A keeps arriving (to B, then A), the IDLE
    session through A's front end is told BYE, and its next login lands on A with
    everything."""
    import threading

    org.a.mailctl("new-mailbox", "dora", "--server", "MBX02", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    client = imap(org.a, "dora")
    try:
        for n in range(5):
            client.append("INBOX", "(\\Seen)" if n == 0 else "", None,
                          message(f"before {n}", "dora@contoso.test").as_bytes())  # fmt: skip
    finally:
        client.logout()
    idle = IdleSession(org.a, "dora")

    def submit(subject: str) -> None:
        with smtplib.SMTP(org.a.address, 587, timeout=30) as smtp:
            smtp.starttls(context=org.a.client_context())
            smtp.login("alice", PASSWORD)
            smtp.send_message(message(subject, "dora@contoso.test"))

    org.a.mailctl("New-MoveRequest", "-Identity", "dora", "-TargetDatabase", "MBX01",
                  "-SuspendWhenReadyToComplete")  # fmt: skip
    wait_for("the copy done", lambda: move_status(org.a, "dora") == "AutoSuspended", 120)
    submit("during")  # to B, where dora still is
    wait_for("'during' on B", lambda: "during" in subjects(org.a, "dora"), 60)

    org.a.mailctl("Resume-MoveRequest", "dora")
    racing = threading.Thread(target=lambda: [submit(f"racing {n}") for n in range(3)])
    racing.start()
    said = idle.until_closed()
    racing.join()
    wait_for("the move completed", lambda: move_status(org.a, "dora") == "Completed", 120)
    assert any(line.startswith(b"* BYE") and b"MBX01" in line for line in said), said

    expected = {f"before {n}" for n in range(5)} | {"during"} | {f"racing {n}" for n in range(3)}
    # A message that met the fence is retried by the submission spool within seconds (451 4.2.1).

    def all_there() -> dict[str, set[bytes]] | None:
        got = subjects(org.a, "dora")
        return got if set(got) >= expected else None

    seen = wait_for("every message on A", all_there, deadline=200)
    assert set(seen) == expected and seen["before 0"] == {b"\\Seen"}
    # B deleted its copy (keeping the fence, and the UIDVALIDITYs it must not hand out again).
    assert not (org.b.home / "data" / "MBX02" / "mailboxes" / "dora").exists()
    assert (org.a.home / "data" / "MBX01" / "mailboxes" / "dora").is_dir()
