"""Retrieval formats, calendar links and read receipts end to end: imaplib and poplib log in
to the back ends (run in-process) as a front end does (the hand-over), and check what they
receive."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from server.directory import proxy_secret
from server.mail import mime
from server.protocols.imap import bodystructure
from server.retrieval import CACHE
from server.retrieval.receipts import MDN_SENT
from server.settings import store as settings_store
from server.settings.models import DELIVERY, IMAP4BE, POP3BE, SUBMISSION
from server.settings.paths import Home
from server.settings.types import MimeTextFormat as F
from server.store import open_store
from server.submission.queue import Spool
from tests.conftest import wait_for
from tests.e2e.handover_support import ProxiedIMAP4, ProxiedPOP3
from tests.e2e.submission_support import inbox
from tests.unit.retrieval.test_retrieval import (
    BODY_TYPES,
    CHANGING,
    MESSAGES,
    _asking,
    assert_valid,
    attachments,
    body_types,
    meeting_request,
    parsed,
)

pytestmark = pytest.mark.e2e
ALL_FORMATS = [F.BestBodyFormat, *CHANGING]


@dataclass
class Servers:
    home: Home
    imap_run: Any
    pop_run: Any
    store: Any
    secret: str

    def imap(self, mailbox: str = "alice") -> ProxiedIMAP4:
        return ProxiedIMAP4(
            "127.0.0.1", self.imap_run.service.bound_port(), secret=self.secret, mailbox=mailbox
        )

    def pop(self, mailbox: str = "alice") -> ProxiedPOP3:
        return ProxiedPOP3(
            "127.0.0.1", self.pop_run.service.bound_port(), secret=self.secret, mailbox=mailbox
        )

    def deliver(self, raw: bytes, mailbox: str = "alice") -> int:
        return self.store.mailbox(mailbox).append("INBOX", raw).uid

    def edit(self, change: Callable[[settings_store.Edit], None]) -> None:
        with settings_store.edit(self.home) as doc:
            change(doc)
        self.imap_run.reload()
        self.pop_run.reload()

    def set_server(self, protocol: str, **values: Any) -> None:
        def change(doc: settings_store.Edit) -> None:
            for key, value in values.items():
                doc.set(("Servers", "MBX01", protocol, key), value)

        self.edit(change)

    def set_mailbox(self, name: str, **values: Any) -> None:
        def change(doc: settings_store.Edit) -> None:
            for key, value in values.items():
                doc.set(("Mailboxes", name, key), value)

        self.edit(change)


@pytest.fixture
def servers(home: Home, in_process: Any) -> Iterator[Servers]:
    with settings_store.edit(home) as doc:
        for name in ("alice", "bob", "carol"):
            doc.set(
                ("Mailboxes", name),
                {
                    "PrimarySmtpAddress": f"{name}@contoso.test",
                    "DisplayName": name.title(),
                    "Server": "MBX01",
                    "ImapEnableExactRFC822Size": True,
                    "PopEnableExactRFC822Size": True,
                },
            )
        # Most tests here check that sizes are those of the bytes sent, which is what
        # EnableExactRFC822Size $true asks for; the default (estimates) has its own tests.
        for protocol in ("ImapSettings", "PopSettings"):
            doc.set(("Servers", "MBX01", protocol, "EnableExactRFC822Size"), True)
    CACHE.clear()
    store = open_store(home, "MBX01")
    try:
        with in_process(IMAP4BE, home) as imap_run, in_process(POP3BE, home) as pop_run:
            yield Servers(home, imap_run, pop_run, store, proxy_secret(home))
    finally:
        store.close()


_FETCH = re.compile(
    rb"^(\d+) \(UID (\d+) RFC822\.SIZE (\d+) BODYSTRUCTURE (.*) BODY\[\] \{(\d+)\}$", re.S
)


def imap_fetch_all(conn: imaplib.IMAP4, peek: bool = True) -> dict[int, tuple[int, bytes, bytes]]:
    """uid -> (RFC822.SIZE, BODYSTRUCTURE wire bytes, message bytes)."""
    body = "BODY.PEEK[]" if peek else "BODY[]"
    typ, data = conn.uid("FETCH", "1:*", f"(RFC822.SIZE BODYSTRUCTURE {body})")
    assert typ == "OK"
    out = {}
    for entry in data:
        if not isinstance(entry, tuple):
            continue
        m = _FETCH.match(entry[0])
        assert m, entry[0][:300]
        assert int(m.group(5)) == len(entry[1])
        out[int(m.group(2))] = (int(m.group(3)), m.group(4), entry[1])
    return out


def check_rendered(name: str, fmt: F, data: bytes, stored: bytes) -> None:
    msg = assert_valid(data)
    if fmt is F.BestBodyFormat:
        assert data == stored
        return
    assert body_types(msg) == BODY_TYPES[fmt], (name, fmt)
    assert attachments(msg) == attachments(parsed(stored))


def asking_carol() -> bytes:
    """A message to alice from carol, asking for a read receipt."""
    return _asking().replace(b"Notification-To: Alice <alice@", b"Notification-To: Carol <carol@")


# --- IMAP -------------------------------------------------------------------------------


def test_imap_every_format_valid_mime_sizes_and_structure_match(servers: Servers) -> None:
    raws = {name: make() for name, make in MESSAGES.items()}
    stored = {servers.deliver(raw): (name, raw) for name, raw in raws.items()}
    conn = servers.imap()
    conn.select("INBOX")
    for fmt in ALL_FORMATS:
        servers.set_server("ImapSettings", MessageRetrievalMimeFormat=fmt.value)
        got = imap_fetch_all(conn)
        assert set(got) == set(stored)
        for uid, (size, structure, data) in got.items():
            name, raw = stored[uid]
            assert size == len(data), (name, fmt)
            assert structure == bodystructure.analyze(data).bodystructure, (name, fmt)
            check_rendered(name, fmt, data, raw)
        # ENVELOPE, sections and partial fetches read the same rendering.
        typ, env = conn.uid("FETCH", "1", "(ENVELOPE BODY.PEEK[1] BODY.PEEK[]<0.20>)")
        first = got[min(got)][2]
        info = bodystructure.analyze(first)
        assert typ == "OK" and b"ENVELOPE " + info.envelope in env[0][0]
        assert env[0][1] == mime.fetch_section(first, info, (1,), None, [])
        assert env[1][1] == first[:20]
    conn.logout()
    # Nothing was written to the store: the stored messages are the delivered bytes.
    box = servers.store.mailbox("alice")
    for uid, (_, raw) in stored.items():
        assert box.read("INBOX", uid) == raw


def test_imap_mailbox_override_beats_server_and_changes_are_live(servers: Servers) -> None:
    html = MESSAGES["html"]()
    uid = servers.deliver(html)
    servers.set_server("ImapSettings", MessageRetrievalMimeFormat="HtmlAndTextAlternative")
    conn = servers.imap()
    conn.select("INBOX")
    assert body_types(parsed(imap_fetch_all(conn)[uid][2])) == ["text/plain", "text/html"]
    # A per-mailbox value counts only with ImapUseProtocolDefaults $false.
    servers.set_mailbox("alice", ImapMessagesRetrievalMimeFormat="TextOnly")
    assert body_types(parsed(imap_fetch_all(conn)[uid][2])) == ["text/plain", "text/html"]
    servers.set_mailbox("alice", ImapUseProtocolDefaults=False)
    size, _, data = imap_fetch_all(conn)[uid]  # same session, next FETCH
    assert body_types(parsed(data)) == ["text/plain"] and size == len(data)
    other = servers.imap("bob")  # bob keeps the server's format
    servers.deliver(MESSAGES["html"](), mailbox="bob")
    other.select("INBOX")
    assert body_types(parsed(next(iter(imap_fetch_all(other).values()))[2])) == [
        "text/plain",
        "text/html",
    ]
    other.logout()
    servers.set_mailbox("alice", ImapMessagesRetrievalMimeFormat="BestBodyFormat")
    assert imap_fetch_all(conn)[uid][2] == html
    conn.logout()


def test_imap_calendar_links_and_force_ical(servers: Servers) -> None:
    meeting = meeting_request()
    uid = servers.deliver(meeting)
    conn = servers.imap()
    _, data = conn.select("INBOX")
    uidvalidity = int(conn.untagged_responses["UIDVALIDITY"][-1])
    servers.set_server("ImapSettings", CalendarItemRetrievalOption="IntranetUrl")
    size, structure, data = imap_fetch_all(conn)[uid]
    msg = assert_valid(data)
    assert "text/calendar" not in [p.get_content_type() for p in msg.walk()]
    internal = servers.imap_run.service.ctx.settings.server("MBX01").OwaVirtualDirectory.InternalUrl
    assert f"{internal}/calendar/alice/{uidvalidity}/{uid}".encode() in data
    assert size == len(data) and b'"TEXT" "CALENDAR"' not in structure.upper()
    servers.set_server(
        "ImapSettings",
        CalendarItemRetrievalOption="Custom",
        OwaServerUrl="https://owaserver01.contoso.test",
    )
    assert b"https://owaserver01.contoso.test/calendar/alice/" in imap_fetch_all(conn)[uid][2]
    servers.set_mailbox(
        "alice", ImapUseProtocolDefaults=False, ImapForceICalForCalendarRetrievalOption=True
    )
    assert imap_fetch_all(conn)[uid][2] == meeting
    conn.logout()


def spooled_receipts(home: Home, address: str = "carol@contoso.test") -> int:
    """Receipts wait in the submission spool for the delivery service (server/delivery/)."""
    spool = Spool(home.queue / "MBX01")
    return sum(1 for e in spool.load() for r in e.recipients if r.address == address)


def deliver_spool(home: Home, in_process: Any, mailbox: str = "carol") -> list[bytes]:
    """Run submission and delivery until the spool is empty; the mailbox's messages."""
    with in_process(DELIVERY, home), in_process(SUBMISSION, home):
        wait_for(lambda: not list((home.queue / "MBX01").glob("*.json")))
    return inbox(home, mailbox)


def test_imap_read_receipt_once_on_download_unless_suppressed(
    servers: Servers, in_process: Any
) -> None:
    uid = servers.deliver(asking_carol())
    conn = servers.imap()
    conn.select("INBOX")
    imap_fetch_all(conn, peek=True)
    assert spooled_receipts(servers.home) == 0  # PEEK is no download
    imap_fetch_all(conn, peek=False)
    imap_fetch_all(conn, peek=False)
    second = servers.imap()
    second.select("INBOX")
    imap_fetch_all(second, peek=False)
    assert spooled_receipts(servers.home) == 1
    typ, flags = conn.uid("FETCH", str(uid), "(FLAGS)")
    assert MDN_SENT.encode() in flags[-1]
    # Suppressed: another message asking for a receipt gets none from the server.
    servers.set_server("ImapSettings", SuppressReadReceipt=True)
    servers.deliver(asking_carol())
    conn.noop()
    imap_fetch_all(conn, peek=False)
    assert spooled_receipts(servers.home) == 1
    conn.logout()
    second.logout()
    [mdn] = deliver_spool(servers.home, in_process)
    assert b"Final-Recipient: rfc822;alice@contoso.test" in mdn


# --- POP3 -------------------------------------------------------------------------------


def pop_download(conn: ProxiedPOP3) -> dict[int, tuple[int, bytes]]:
    """message number -> (LIST size, the bytes RETR sent, byte-stuffing undone)."""
    count, total = conn.stat()
    listed = {int(n): int(size) for n, size in (line.split() for line in conn.list()[1])}
    assert len(listed) == count and sum(listed.values()) == total
    out = {}
    for n, size in listed.items():
        _, lines, _ = conn.retr(n)
        out[n] = (size, b"".join(line + b"\r\n" for line in lines))
    return out


def test_pop3_every_format_valid_mime_and_sizes_match(servers: Servers) -> None:
    raws = {name: make() for name, make in MESSAGES.items()}
    for raw in raws.values():
        servers.deliver(raw)
    names = list(raws)
    for fmt in ALL_FORMATS:
        servers.set_server("PopSettings", MessageRetrievalMimeFormat=fmt.value)
        conn = servers.pop()
        for n, (size, data) in pop_download(conn).items():
            name = names[n - 1]
            assert size == len(data), (name, fmt)
            check_rendered(name, fmt, data, raws[name])
        conn.quit()
    box = servers.store.mailbox("alice")
    assert [box.read("INBOX", r.uid) for r in box.snapshot("INBOX").rows] == list(raws.values())


def test_pop3_as_stored_sends_the_stored_bytes_without_rendering(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rendering(*args: object) -> bytes:
        raise AssertionError("as-stored retrieval must not render")

    monkeypatch.setattr(CACHE, "data", no_rendering)
    monkeypatch.setattr(CACHE, "size", no_rendering)
    raw = MESSAGES["html"]()
    servers.deliver(raw)
    conn = servers.pop()
    assert pop_download(conn)[1] == (len(raw), raw)
    conn.quit()


def test_pop3_mailbox_override_and_next_session_sees_the_change(servers: Servers) -> None:
    html = MESSAGES["html"]()
    servers.deliver(html)
    servers.set_server("PopSettings", MessageRetrievalMimeFormat="TextOnly")
    conn = servers.pop()
    size, data = pop_download(conn)[1]
    assert body_types(parsed(data)) == ["text/plain"] and size == len(data)
    conn.quit()
    servers.set_mailbox(
        "alice",
        PopUseProtocolDefaults=False,
        PopMessagesRetrievalMimeFormat="HtmlAndTextAlternative",
    )
    conn = servers.pop()
    size, data = pop_download(conn)[1]
    assert body_types(parsed(data)) == ["text/plain", "text/html"] and size == len(data)
    # TOP reads the same rendering.
    _, lines, _ = conn.top(1, 0)
    assert b"".join(line + b"\r\n" for line in lines) == data[: data.index(b"\r\n\r\n") + 4]
    conn.quit()
    servers.set_mailbox("alice", PopMessagesRetrievalMimeFormat="BestBodyFormat")
    conn = servers.pop()
    assert pop_download(conn)[1] == (len(html), html)
    conn.quit()


def test_pop3_calendar_link_on_the_external_url(servers: Servers) -> None:
    meeting = meeting_request()
    uid = servers.deliver(meeting)
    servers.edit(
        lambda doc: doc.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "ExternalUrl"),
            "https://mail.contoso.com/owa",
        )
    )
    servers.set_server("PopSettings", CalendarItemRetrievalOption="InternetUrl")
    uidvalidity = servers.store.mailbox("alice").status("INBOX").uidvalidity
    conn = servers.pop()
    size, data = pop_download(conn)[1]
    conn.quit()
    assert size == len(data)
    assert f"https://mail.contoso.com/owa/calendar/alice/{uidvalidity}/{uid}".encode() in data
    assert "text/calendar" not in [p.get_content_type() for p in assert_valid(data).walk()]
    servers.set_mailbox(
        "alice", PopUseProtocolDefaults=False, PopForceICalForCalendarRetrievalOption=True
    )
    conn = servers.pop()
    assert pop_download(conn)[1][1] == meeting
    conn.quit()


def test_pop3_receipt_on_retr_not_top_and_only_once(servers: Servers, in_process: Any) -> None:
    servers.deliver(asking_carol())
    conn = servers.pop()
    conn.top(1, 5)
    assert spooled_receipts(servers.home) == 0
    conn.retr(1)
    conn.retr(1)
    conn.quit()
    conn = servers.pop()
    conn.retr(1)
    conn.quit()
    assert spooled_receipts(servers.home) == 1
    servers.set_server("PopSettings", SuppressReadReceipt=True)
    servers.deliver(asking_carol())
    conn = servers.pop()
    conn.retr(2)
    conn.quit()
    assert spooled_receipts(servers.home) == 1
    assert len(deliver_spool(servers.home, in_process)) == 1


# --- sizes: estimated (EnableExactRFC822Size $false, the default) and exact ---------------


@pytest.mark.parametrize("exact", [False, True])
def test_textonly_sizes_and_bodies_agree_between_pop3_and_imap(
    servers: Servers, exact: bool
) -> None:
    """LIST and RFC822.SIZE give the same size for every message, RETR and BODY[] the same
    bytes; with exact sizes the size is that of those bytes, with estimates (the default)
    opening the folder renders nothing: each message is rendered when it is retrieved."""
    raws = [make() for make in MESSAGES.values()]
    for raw in raws:
        servers.deliver(raw)
    for protocol in ("ImapSettings", "PopSettings"):
        servers.set_server(
            protocol, MessageRetrievalMimeFormat="TextOnly", EnableExactRFC822Size=exact
        )
    servers.set_mailbox("alice", ImapEnableExactRFC822Size=exact, PopEnableExactRFC822Size=exact)
    CACHE.clear()
    renders = CACHE.renders
    conn = servers.imap()
    conn.select("INBOX")
    typ, data = conn.uid(
        "FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
    )
    assert typ == "OK"
    opened = [entry for entry in data if isinstance(entry, tuple)]
    imap_sizes = [int(re.search(rb"RFC822\.SIZE (\d+)", e[0]).group(1)) for e in opened]  # type: ignore[union-attr]
    headers = [e[1] for e in opened]
    pop = servers.pop()
    count, _ = pop.stat()
    if not exact:
        assert CACHE.renders == renders  # open and login measured nothing
    downloaded = pop_download(pop)
    pop.quit()
    fetched = imap_fetch_all(conn)
    conn.logout()
    assert count == len(raws) == len(fetched)
    pop_sizes = [downloaded[n][0] for n in sorted(downloaded)]
    assert pop_sizes == imap_sizes == [fetched[uid][0] for uid in sorted(fetched)]
    for n, uid in zip(sorted(downloaded), sorted(fetched), strict=True):
        size, data = downloaded[n]
        assert data == fetched[uid][2]
        assert size == (len(data) if exact else len(raws[n - 1]))
        pick = mime.header_filter(("FROM", "SUBJECT", "DATE"), exclude=False)
        assert headers[n - 1] == pick(data[: data.index(b"\r\n\r\n") + 4])
    assert any(fetched[uid][2] != raws[i] for i, uid in enumerate(sorted(fetched)))
