"""Real command-line mail clients from Debian (isync's mbsync, msmtp, curl) against the real
services started through `mailctl`, through the front ends only, with TLS verified against
the home's private CA. Each test skips, naming the Debian package, when its client is absent.

The services are started once for the module (starting them costs seconds; each test uses
its own mailboxes, so the tests do not depend on each other).
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from imapclient import IMAPClient

from server.protocols.imap import utf7
from server.settings import store
from server.settings.models import DELIVERY, SUBMISSION, PortPlan, default_settings
from server.settings.paths import Home
from tests.e2e.conftest import REPO, ServiceRunner, _base_env, free_base_port
from tests.e2e.frontend_support import PASSWORD, client_context

pytestmark = pytest.mark.e2e

DOMAIN = "contoso.test"
MAILBOXES = ("syncer", "mailer", "curler", "poster")
CLIENT_TIMEOUT = 20


def needs(binary: str, package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(binary) is None,
        reason=f"{binary} is not installed (Debian package: {package})",
    )


@dataclass
class Site:
    home: Home
    ca: Path
    imap: int  # STARTTLS
    imaps: int
    pop3: int  # STLS
    pop3s: int
    submission: int  # STARTTLS

    def imap_login(self, user: str) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.imaps, ssl_context=client_context(self.home), timeout=CLIENT_TIMEOUT
        )
        client.login(user, PASSWORD)
        return client


def mailctl_together(runner: ServiceRunner, commands: list[list[str]]) -> None:
    running = [
        (
            command,
            subprocess.Popen(
                [sys.executable, "-m", "mailctl", *command],
                env=runner.env,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for command in commands
    ]
    for command, process in running:
        output, _ = process.communicate(PASSWORD + "\n", timeout=60)
        assert process.returncode == 0, f"mailctl {' '.join(command)}: {output}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A fresh home with the mailboxes, IMAP4 and POP3 enabled (front and back ends running)
    and client submission started, all through the CLI."""
    home = Home.resolve(tmp_path_factory.mktemp("clients") / "home")
    base = free_base_port()
    store.create(
        home,
        default_settings(
            server="MBX01",
            domain=DOMAIN,
            ports=PortPlan.shifted(
                base, loopback_only=True, bind_address="127.0.0.1", backend_address="127.0.0.1"
            ),
        ),
    )
    runner = ServiceRunner(home, _base_env(home))
    try:
        # Independent mailctl runs go side by side to keep the set-up short (settings writes
        # are serialized by the settings lock); enable-imap4 goes alone because the first
        # service start makes the CA and the certificate.
        mailctl_together(runner, [["new-mailbox", name, "--password-stdin"] for name in MAILBOXES])
        mailctl_together(runner, [["enable-imap4"]])
        mailctl_together(
            runner, [["enable-pop3"], ["start-service", DELIVERY], ["start-service", SUBMISSION]]
        )
        settings = runner.settings
        server = settings.Servers["MBX01"]
        imap, pop = server.ImapSettings, server.PopSettings
        yield Site(
            home=home,
            ca=home.certs / "mailctl-ca.pem",
            imap=imap.UnencryptedOrTLSBindings[0].port,
            imaps=imap.SSLBindings[0].port,
            pop3=pop.UnencryptedOrTLSBindings[0].port,
            pop3s=pop.SSLBindings[0].port,
            submission=settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port,
        )
    finally:
        runner.stop_all()


def run(
    argv: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, timeout=CLIENT_TIMEOUT
    )


def message(sender: str, to: str, subject: str, msgid: str, body: str = "body") -> bytes:
    return (
        f"From: {sender}@{DOMAIN}\r\nTo: {to}@{DOMAIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{msgid}@{DOMAIN}>\r\n\r\n{body}\r\n"
    ).encode()


def quoted(folder: str) -> str:
    """A mailbox argument for imaplib (which sends it as is): modified UTF-7, quoted."""
    return '"' + utf7.encode(folder) + '"'


def append(client: imaplib.IMAP4, folder: str, raw: bytes, flags: str = "") -> int:
    typ, data = client.append(quoted(folder), f"({flags})" if flags else None, None, raw)
    assert typ == "OK", data
    found = re.search(rb"APPENDUID \d+ (\d+)", data[0])
    assert found, data  # UIDPLUS: the clients below rely on it
    return int(found.group(1))


class InboxWatch:
    """IDLE on a mailbox's INBOX before something is sent, so the arrival is awaited on the
    server's own EXISTS notice rather than by polling."""

    def __init__(self, site: Site, user: str) -> None:
        self.client = IMAPClient(
            "127.0.0.1",
            port=site.imaps,
            ssl_context=client_context(site.home),
            timeout=CLIENT_TIMEOUT,
        )
        self.client.login(user, PASSWORD)
        self.client.select_folder("INBOX")
        self.client.idle()

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while time.monotonic() < deadline:
            for response in self.client.idle_check(timeout=deadline - time.monotonic()):
                if response[1] == b"EXISTS" and response[0] >= count:
                    return
        raise AssertionError(f"no {count} messages in INBOX after {CLIENT_TIMEOUT} s")

    def fetch_all(self) -> list[bytes]:
        self.client.idle_done()
        found = self.client.fetch(self.client.search("ALL"), ["BODY.PEEK[]"])
        return [found[uid][b"BODY[]"] for uid in sorted(found)]

    def close(self) -> None:
        self.client.logout()


# --------------------------------------------------------------------------- isync (mbsync)

# IMAP system flags <-> Maildir info letters (the Maildir spec, as isync writes them).
MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
NON_ASCII = "Résumés"
SERVER_FOLDERS = {
    "INBOX": [("inbox-1", ""), ("inbox-2", "\\Seen")],
    "Sent Items": [("sent-1", "\\Seen"), ("sent-2", "\\Seen \\Answered")],
    NON_ASCII: [("cv-1", ""), ("cv-2", "\\Flagged")],
    "Projects/2024": [("plan-1", "")],
}
Snapshot = dict[str, dict[str, frozenset[str]]]  # folder -> Message-ID -> flags


def message_id(raw: bytes) -> str:
    value = BytesHeaderParser().parsebytes(raw)["Message-ID"]
    assert value, raw[:200]
    return str(value).strip()


def server_snapshot(client: imaplib.IMAP4) -> Snapshot:
    typ, listed = client.list()
    assert typ == "OK", listed
    snapshot: Snapshot = {}
    for line in listed:
        assert isinstance(line, bytes), listed
        attrs, name = re.fullmatch(rb'\(([^)]*)\) "/" "?(.*?)"?', line).groups()  # type: ignore[union-attr]
        if b"\\Noselect" in attrs or b"\\NonExistent" in attrs:
            continue
        folder = utf7.decode(name)
        typ, _ = client.select(quoted(folder), readonly=True)
        assert typ == "OK", folder
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", data
        messages: dict[str, frozenset[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags, item
            messages[message_id(item[1])] = frozenset(
                f.decode() for f in flags.group(1).split() if f != b"\\Recent"
            )
        snapshot[folder] = messages
    client.unselect() if "UNSELECT" in client.capabilities else client.close()
    return snapshot


def maildir_folder_name(relative: str) -> str:
    """isync 1.4 keeps the server's modified UTF-7 names on disk, later versions may decode
    them: both are the same folder."""
    try:
        return utf7.decode(relative)
    except ValueError:
        return relative


def local_snapshot(root: Path) -> Snapshot:
    snapshot: Snapshot = {}
    for cur in sorted(root.rglob("cur")):
        folder = cur.parent
        messages: dict[str, frozenset[str]] = {}
        for path in [*cur.iterdir(), *(folder / "new").iterdir()]:
            info = path.name.partition(":2,")[2]
            messages[message_id(path.read_bytes())] = frozenset(
                MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS
            )
        snapshot[maildir_folder_name(folder.relative_to(root).as_posix())] = messages
    return snapshot


def mbsync_config(site: Site, root: Path, starttls: bool) -> Path:
    """Host is `localhost`, not 127.0.0.1: isync 1.4 matches the host name against the
    certificate's DNS names only (it ignores IP address SANs)."""
    config = root.parent / ("mbsyncrc-starttls" if starttls else "mbsyncrc-imaps")
    config.write_text(
        "IMAPAccount mailctl\n"
        "Host localhost\n"
        f"Port {site.imap if starttls else site.imaps}\n"
        "User syncer\n"
        f'Pass "{PASSWORD}"\n'
        f"SSLType {'STARTTLS' if starttls else 'IMAPS'}\n"
        "SystemCertificates no\n"
        f"CertificateFile {site.ca}\n\n"
        "IMAPStore remote\nAccount mailctl\n\n"
        f"MaildirStore local\nPath {root}/\nInbox {root}/INBOX\nSubFolders Verbatim\n\n"
        "Channel everything\nFar :remote:\nNear :local:\nPatterns *\n"
        "Create Both\nExpunge Both\nSyncState *\nSync All\n"
    )
    config.chmod(0o600)
    return config


def mbsync(site: Site, root: Path, starttls: bool = False) -> str:
    config = mbsync_config(site, root, starttls)
    result = run(
        ["mbsync", "-V", "-c", str(config), "everything"],
        env={**os.environ, "HOME": str(root.parent)},
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    # mbsync reports many protocol problems as warnings and still exits 0
    assert not re.search(r"(?im)^(error|warning|imap error|imap warning)", output), output
    return output


def backdate(*folders: Path) -> None:
    """isync waits out the current second when a Maildir folder changed in it (to avoid
    racing another writer); a change made by the test is not such a race."""
    past = time.time() - 2
    for folder in folders:
        os.utime(folder, (past, past))


def local_change(folder: Path, old_id: str, letters: str) -> None:
    """Set the Maildir flags of a message (moving it to cur/, as a mail reader does)."""
    for path in [*(folder / "cur").iterdir(), *(folder / "new").iterdir()]:
        if message_id(path.read_bytes()) == f"<{old_id}@{DOMAIN}>":
            base = path.name.partition(":2,")[0]
            path.rename(folder / "cur" / f"{base}:2,{letters}")
            backdate(folder / "cur", folder / "new")
            return
    raise AssertionError(f"{old_id} not in {folder}")


def local_folder(root: Path, name: str) -> Path:
    for candidate in (root / name, root / utf7.encode(name)):
        if candidate.is_dir():
            return candidate
    raise AssertionError(f"no local folder for {name}: {sorted(p.name for p in root.iterdir())}")


def ids(snapshot: Snapshot, folder: str) -> dict[str, frozenset[str]]:
    return {k.strip("<>").removesuffix(f"@{DOMAIN}"): v for k, v in snapshot[folder].items()}


@needs("mbsync", "isync")
def test_mbsync_two_way_sync_of_several_folders(site: Site, tmp_path: Path) -> None:
    client = site.imap_login("syncer")
    try:
        for folder, messages in SERVER_FOLDERS.items():
            if folder != "INBOX":
                typ, data = client.create(quoted(folder))
                assert typ == "OK" or b"[ALREADYEXISTS]" in data[0], (folder, data)
            for msgid, flags in messages:
                append(client, folder, message("x", "syncer", f"{folder} {msgid}", msgid), flags)
        expected = server_snapshot(client)
        assert {f: len(m) for f, m in expected.items() if m} == {
            f: len(m) for f, m in SERVER_FOLDERS.items()
        }

        # 1. the first full sync brings every folder and flag down
        root = tmp_path / "Mail"
        root.mkdir()
        mbsync(site, root)
        assert local_snapshot(root) == expected

        # 2. a change on each side
        client.select(quoted("Sent Items"))
        client.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        client.select(quoted(NON_ASCII))
        client.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        assert client.expunge()[0] == "OK"
        client.close()
        cv = local_folder(root, NON_ASCII)
        (cv / "cur" / f"{int(time.time())}.local1.test:2,FS").write_bytes(
            message("syncer", "x", "written offline", "local-1").replace(b"\r\n", b"\n")
        )
        backdate(cv / "cur")
        local_change(local_folder(root, "Projects/2024"), "plan-1", "RS")
        local_change(local_folder(root, "INBOX"), "inbox-1", "T")  # deleted: expunged both sides
        notes = root / "Local Notes"
        for sub in ("cur", "new", "tmp"):
            (notes / sub).mkdir(parents=True)
        (notes / "new" / f"{int(time.time())}.local2.test").write_bytes(
            message("syncer", "x", "a note", "note-1").replace(b"\r\n", b"\n")
        )
        backdate(notes / "new", notes / "cur")

        # 3. sync again (over STARTTLS this time): both sides agree
        mbsync(site, root, starttls=True)
        server = server_snapshot(client)
        assert local_snapshot(root) == server
        assert ids(server, "Sent Items") == {
            "sent-1": {"\\Seen", "\\Flagged"},
            "sent-2": {"\\Seen", "\\Answered"},
        }
        assert ids(server, NON_ASCII) == {"cv-2": {"\\Flagged"}, "local-1": {"\\Flagged", "\\Seen"}}
        assert ids(server, "Projects/2024") == {"plan-1": {"\\Answered", "\\Seen"}}
        assert ids(server, "INBOX") == {"inbox-2": {"\\Seen"}}
        assert ids(server, "Local Notes") == {"note-1": frozenset()}

        # 4. nothing left to do: a third run changes neither side
        mbsync(site, root)
        assert server_snapshot(client) == server
        assert local_snapshot(root) == server
    finally:
        client.logout()


# --------------------------------------------------------------------------- msmtp


@needs("msmtp", "msmtp")
def test_msmtp_submits_through_the_client_frontend_connector(site: Site, tmp_path: Path) -> None:
    config = tmp_path / "msmtprc"
    config.write_text(
        "account default\nhost 127.0.0.1\n"
        f"port {site.submission}\n"
        f"tls on\ntls_starttls on\ntls_trust_file {site.ca}\n"
        f"auth plain\nuser mailer\npassword {PASSWORD}\nfrom mailer@{DOMAIN}\n"
    )
    config.chmod(0o600)
    raw = message("mailer", "mailer", "sent with msmtp", "msmtp-1", "Hello from msmtp.")
    watch = InboxWatch(site, "mailer")
    try:
        result = run(["msmtp", "-C", str(config), f"mailer@{DOMAIN}"], stdin=raw)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        watch.wait_for(1)
        [delivered] = watch.fetch_all()
    finally:
        watch.close()
    headers = BytesHeaderParser().parsebytes(delivered)
    assert headers["Subject"] == "sent with msmtp"
    assert headers["Message-ID"] == f"<msmtp-1@{DOMAIN}>"
    assert delivered.endswith(b"\r\n\r\nHello from msmtp.\r\n")


# --------------------------------------------------------------------------- curl


def curl(
    site: Site, url: str, *args: str, user: str = "curler", ca: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            str(CLIENT_TIMEOUT),
            *(["--cacert", str(site.ca)] if ca else []),
            "--user",
            f"{user}:{PASSWORD}",
            *args,
            url,
        ]
    )


def curl_ok(site: Site, url: str, *args: str, user: str = "curler") -> bytes:
    result = curl(site, url, *args, user=user)
    assert result.returncode == 0, f"curl {url}: {result.stderr.decode(errors='replace')}"
    return result.stdout


@pytest.fixture(scope="module")
def curler_messages(site: Site) -> dict[str, tuple[int, bytes]]:
    """Messages in the `curler` mailbox: folder -> (UID, exact bytes)."""
    client = site.imap_login("curler")
    try:
        inbox = message("x", "curler", "first for curl", "curl-1", "Line one.\r\nLine two.")
        append(client, "INBOX", message("x", "curler", "second", "curl-2"))
        first = append(client, "INBOX", inbox)
        sent = message("curler", "x", "kept in sent", "curl-3")
        return {"INBOX": (first, inbox), "Sent Items": (append(client, "Sent Items", sent), sent)}
    finally:
        client.logout()


@needs("curl", "curl")
def test_curl_imap_lists_and_fetches_by_uid(
    site: Site, curler_messages: dict[str, tuple[int, bytes]]
) -> None:
    base = f"imaps://127.0.0.1:{site.imaps}"
    listing = curl_ok(site, f"{base}/").decode()
    assert '* LIST (\\HasNoChildren) "/" "INBOX"' in listing, listing
    assert re.search(r'\* LIST \([^)]*\\Sent[^)]*\) "/" "Sent Items"', listing), listing

    uid, raw = curler_messages["INBOX"]
    assert curl_ok(site, f"{base}/INBOX;UID={uid}") == raw
    uid, raw = curler_messages["Sent Items"]
    assert curl_ok(site, f"{base}/Sent%20Items;UID={uid}") == raw
    section = curl_ok(
        site, f"{base}/INBOX;UID={curler_messages['INBOX'][0]};SECTION=HEADER.FIELDS%20(SUBJECT)"
    )
    assert section == b"Subject: first for curl\r\n\r\n"
    # the same over STARTTLS on the plain port, which curl must not use in the clear
    assert curl_ok(site, f"imap://127.0.0.1:{site.imap}/INBOX;UID={uid}", "--ssl-reqd") != b""
    search = curl_ok(site, f"{base}/INBOX?SUBJECT%20second").decode()
    assert search.strip() == "* SEARCH 1", search


@needs("curl", "curl")
def test_curl_verifies_the_certificate_against_the_home_ca(site: Site) -> None:
    result = curl(site, f"imaps://127.0.0.1:{site.imaps}/", ca=False)
    assert result.returncode == 60, result.stderr  # CURLE_PEER_FAILED_VERIFICATION


@needs("curl", "curl")
def test_curl_pop3_lists_and_retrieves(
    site: Site, curler_messages: dict[str, tuple[int, bytes]]
) -> None:
    for url, extra in (
        (f"pop3s://127.0.0.1:{site.pop3s}", ()),
        (f"pop3://127.0.0.1:{site.pop3}", ("--ssl-reqd",)),
    ):
        listing = curl_ok(site, f"{url}/", *extra).decode()
        sizes = dict(line.split() for line in listing.splitlines())
        assert list(sizes) == ["1", "2"], listing
        retrieved = curl_ok(site, f"{url}/2", *extra)
        assert retrieved == curler_messages["INBOX"][1]
        assert int(sizes["2"]) == len(retrieved)  # LIST counts the bytes RETR sends
        uidl = curl_ok(site, f"{url}/", "--request", "UIDL", *extra).decode().split()
        assert len(uidl) == 4 and uidl[0::2] == ["1", "2"], uidl


@needs("curl", "curl")
def test_curl_smtp_submission_with_starttls(site: Site, tmp_path: Path) -> None:
    raw = message("curler", "poster", "uploaded by curl", "curl-smtp-1", "Sent with curl.")
    upload = tmp_path / "message.eml"
    upload.write_bytes(raw)
    watch = InboxWatch(site, "poster")
    try:
        curl_ok(
            site,
            f"smtp://127.0.0.1:{site.submission}",
            "--ssl-reqd",
            "--mail-from",
            f"curler@{DOMAIN}",
            "--mail-rcpt",
            f"poster@{DOMAIN}",
            "--upload-file",
            str(upload),
        )
        watch.wait_for(1)
        [delivered] = watch.fetch_all()
    finally:
        watch.close()
    assert delivered.endswith(raw), delivered  # only a Received: line in front
