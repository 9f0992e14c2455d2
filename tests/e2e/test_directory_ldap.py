"""Mailboxes in an LDAP directory (issue 16): a real slapd started by the test, mailboxes made
with mailctl into it, logins through the IMAP4 and POP3 front ends and SMTP AUTH, and a
directory that goes away and comes back while the services keep running."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server.settings import store
from server.settings.models import DELIVERY, IMAP4, IMAP4BE, POP3, POP3BE, SUBMISSION, WEB
from server.settings.paths import Home
from server.settings.types import LoginType
from tests.e2e.conftest import ServiceRunner, _base_env
from tests.e2e.frontend_support import client_context, make_home, ports, save
from tests.e2e.ldap_support import PEOPLE, ROOT_DN, ROOT_PW, SUFFIX, Slapd, need_slapd

pytestmark = pytest.mark.e2e
PASSWORD = "Corr3ct-horse"
TIMEOUT = 2  # the directory's ConnectTimeout and OperationTimeout in these tests


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    need_slapd()
    server = Slapd(tmp_path / "slapd")
    server.start()
    try:
        server.populate()
        yield server
    finally:
        if server.pid is not None:
            server.thaw()
        server.stop()


def mailctl(runner: ServiceRunner, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return runner.run_ok(*args, stdin=stdin)


@pytest.fixture
def site(tmp_path: Path, slapd: Slapd) -> Iterator[ServiceRunner]:
    """An organization whose mailboxes live in slapd; both front ends and back ends, and
    submission, running as real processes; plain-text logins allowed on loopback."""
    home = make_home(tmp_path / "home")
    settings = store.load(home).settings
    server = settings.Servers["MBX01"]
    server.ImapSettings.LoginType = LoginType.PlainTextLogin
    server.ImapSettings.ProxyTargetPort = server.ImapBackEndPort
    server.PopSettings.LoginType = LoginType.PlainTextLogin
    server.PopSettings.ProxyTargetPort = server.PopBackEndPort
    save(home, settings)
    runner = ServiceRunner(home, _base_env(home))
    try:
        mailctl(
            runner,
            "set-adserversettings",
            "--uri",
            slapd.uri,
            "--base-dn",
            PEOPLE,
            "--bind-dn",
            f"cn=mailctl,{SUFFIX}",
            "--bind-password-stdin",
            "--connect-timeout",
            str(TIMEOUT),
            "--operation-timeout",
            str(TIMEOUT),
            stdin="Serv1ce-secret\n",
        )
        mailctl(
            runner,
            "new-mailbox",
            "alice",
            "--password-stdin",
            "--display-name",
            "Alice Liddell",
            stdin=PASSWORD + "\n",
        )
        mailctl(runner, "new-mailbox", "carol", "--password-stdin", stdin=PASSWORD + "\n")
        for name in (IMAP4BE, POP3BE, IMAP4, POP3, DELIVERY, SUBMISSION):
            runner.start(name)
        yield runner
    finally:
        runner.stop_all()


def imap_login(home: Home, user: str, password: str = PASSWORD) -> imaplib.IMAP4:
    plain, _ = ports(home, "IMAP")
    client = imaplib.IMAP4("127.0.0.1", plain, timeout=30)
    client.login(user, password)
    return client


def pop_login(home: Home, user: str, password: str = PASSWORD) -> poplib.POP3:
    plain, _ = ports(home, "POP")
    client = poplib.POP3("127.0.0.1", plain, timeout=30)
    client.user(user)
    client.pass_(password)
    return client


def smtp_login(home: Home, user: str, password: str = PASSWORD) -> None:
    port = store.load(home).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=client_context(home))
        client.login(user, password)


def test_mailboxes_made_with_mailctl_live_in_ldap_and_log_in(
    site: ServiceRunner, slapd: Slapd
) -> None:
    home = site.home
    assert (
        "Mailboxes" not in home.settings_file.read_text()
        or "alice" not in store.load(home).settings.Mailboxes
    )
    shown = mailctl(site, "get-mailbox", "alice", "--output", "json").stdout
    assert "Alice Liddell" in shown and "alice@contoso.test" in shown

    # Aliases, the IMAP switch and a quota, written to the directory by Set-Mailbox.
    mailctl(
        site,
        "set-mailbox",
        "alice",
        "--email-addresses",
        "alice@contoso.test,al@contoso.test",
        "--use-database-quota-defaults",
        "false",
        "--prohibit-send-receive-quota",
        "2 GB",
    )
    mailctl(site, "set-casmailbox", "carol", "--imap-enabled", "false")
    import ldap3

    conn = ldap3.Connection(
        ldap3.Server(slapd.uri), f"cn=mailctl,{SUFFIX}", "Serv1ce-secret", auto_bind=True
    )
    conn.search(
        PEOPLE,
        "(uid=alice)",
        attributes=["mailctlEmailAddress", "userPassword", "mailctlProhibitSendReceiveQuota"],
    )
    entry = conn.response[0]["attributes"]
    assert entry["mailctlEmailAddress"] == ["al@contoso.test"]
    assert entry["mailctlProhibitSendReceiveQuota"] in ("2 GB", ["2 GB"])  # single-valued
    assert str(entry["userPassword"][0]).startswith("b'{ARGON2}$argon2id$")
    conn.unbind()

    client = imap_login(home, "al@contoso.test")  # an alias logs in too
    assert client.select("INBOX")[0] == "OK"
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK" and b"STORAGE 0 2097152" in b" ".join(data[1]), data  # the LDAP quota
    client.logout()
    pop = pop_login(home, "alice")
    assert pop.stat()[0] == 0
    pop.quit()
    smtp_login(home, "alice")
    pop_login(home, "carol").quit()

    # Mail to a directory address is local: it reaches the mailbox (seen by IDLE).
    from imapclient import IMAPClient

    plain, _ = ports(home, "IMAP")
    with IMAPClient("127.0.0.1", port=plain, ssl=False, timeout=30) as watcher:
        watcher.login("alice", PASSWORD)
        watcher.select_folder("INBOX")
        watcher.idle()
        port = store.load(home).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.starttls(context=client_context(home))
            client.login("carol", PASSWORD)
            client.sendmail(
                "carol@contoso.test",
                ["al@contoso.test"],
                b"From: carol@contoso.test\r\nTo: al@contoso.test\r\nSubject: hello\r\n\r\nHi.\r\n",
            )
        responses = watcher.idle_check(timeout=20)
        watcher.idle_done()
        assert any(r[1] == b"EXISTS" for r in responses), responses
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(home, "carol")  # ImapEnabled FALSE in the directory
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(home, "alice", "wrong")

    # A new password set with Set-Mailbox works at once; Remove-Mailbox removes the entry.
    mailctl(site, "set-mailbox", "alice", "--password-stdin", stdin="N3w-password\n")
    imap_login(home, "alice", "N3w-password").logout()
    mailctl(site, "remove-mailbox", "carol")
    with pytest.raises(poplib.error_proto):
        pop_login(home, "carol")


def reloaded(runner: ServiceRunner, *names: str) -> None:
    """Wait until the services run the settings as written (their control socket says)."""
    version = store.load(runner.home).version
    deadline = time.monotonic() + 20
    while not all(runner.get(name).SettingsVersion == version for name in names):
        assert time.monotonic() < deadline, "the services did not reload the settings"
        time.sleep(0.05)


def test_logins_verified_by_binding_as_the_user(site: ServiceRunner, slapd: Slapd) -> None:
    import ldap3

    # A password only the directory can check (not an argon2 hash mailctl could read).
    conn = ldap3.Connection(ldap3.Server(slapd.uri), ROOT_DN, ROOT_PW, auto_bind=True)
    conn.modify(f"uid=alice,{PEOPLE}", {"userPassword": [(ldap3.MODIFY_REPLACE, ["Pl4in-ldap"])]})
    conn.unbind()
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(site.home, "alice", "Pl4in-ldap")  # LoginVerification Hash: no hash

    mailctl(site, "set-adserversettings", "--login-verification", "Bind")
    reloaded(site, IMAP4, POP3)
    imap_login(site.home, "alice", "Pl4in-ldap").logout()
    pop_login(site.home, "alice@contoso.test", "Pl4in-ldap").quit()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(site.home, "alice", "wrong")


def test_directory_down_is_a_temporary_failure_and_recovery_needs_no_restart(
    site: ServiceRunner,
    slapd: Slapd,
) -> None:
    home = site.home
    open_session = imap_login(home, "alice")
    open_session.select("INBOX")

    # Frozen: connections are accepted but never answered (the operation timeout). Logins
    # at the same time queue for the directory, but none waits past its bound.
    slapd.freeze()
    started = time.monotonic()

    def answer() -> str:
        try:
            imap_login(home, "alice").logout()
        except imaplib.IMAP4.error as exc:
            return str(exc)
        return "logged in"

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: answer(), range(6)))
    assert all("[UNAVAILABLE]" in a for a in answers), answers
    assert time.monotonic() - started < 5 * TIMEOUT + 5
    slapd.thaw()

    # Gone: nothing listens (the connect fails at once).
    slapd.stop()
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        imap_login(home, "alice")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        pop_login(home, "alice")
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_login(home, "alice")
    assert refused.value.smtp_code == 454
    assert refused.value.smtp_error.startswith(b"4.7.0")
    assert time.monotonic() - started < TIMEOUT * 6 + 5
    # The session opened before keeps working.
    assert open_session.noop()[0] == "OK"
    assert open_session.select("INBOX")[0] == "OK"

    # Back on the same port: logins work again, nothing restarted.
    slapd.start()
    imap_login(home, "alice").logout()
    pop_login(home, "alice").quit()
    smtp_login(home, "alice")
    open_session.logout()


def test_web_sign_in_with_the_directory_down_is_a_clear_503(
    site: ServiceRunner, slapd: Slapd
) -> None:
    from tests.e2e.test_web_service import https

    site.start(WEB)
    signed_in = https(site.home)
    assert signed_in.sign_in("alice", PASSWORD).status == 303
    assert signed_in.get("/settings").status == 200  # the session of a directory mailbox

    slapd.stop()
    other = https(site.home)
    refused = other.sign_in("alice", PASSWORD)
    assert refused.status == 503 and "cannot be reached" in refused.text
    assert signed_in.get("/settings").status == 200  # signed-in users are not thrown out

    slapd.start()
    assert other.sign_in("alice", PASSWORD).status == 303
