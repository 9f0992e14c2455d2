"""server.retrieval: body formats, calendar links, read receipts, options and the cache."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.backend.service import spool_submit
from server.protocols.imap import bodystructure
from server.retrieval import (
    CACHE,
    ItemRef,
    Options,
    RenderCache,
    effective_options,
    options_for,
    receipts,
    render,
    textconv,
)
from server.retrieval import calendar as cal
from server.retrieval.render import convert
from server.settings.models import (
    ImapSettings,
    Mailbox,
    OwaVirtualDirectorySettings,
    PopSettings,
    default_settings,
)
from server.settings.paths import Home
from server.settings.types import CalendarItemRetrievalOption as Cal
from server.settings.types import MimeTextFormat as F
from server.store import open_store
from server.submission.queue import QueueEntry
from tests.conftest import corpus_paths

HEAD = (
    "From: Alice <alice@contoso.test>\r\nTo: bob@contoso.test\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Tue, 3 Mar 2020 10:00:00 +0000\r\n"
    "Message-ID: <m1@contoso.test>\r\nX-Keep: exactly  as   stored\r\n"
)
ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
    "UID:1234@contoso.test\r\nSUMMARY:Budget review\r\nDTSTART:20240305T140000Z\r\n"
    "DTEND:20240305T150000Z\r\nLOCATION:Room 7\r\nORGANIZER:mailto:alice@contoso.test\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
PDF = b"%PDF-1.4 fake \x00\x01\x02 bytes\n" * 20


def _msg(*, head: str = HEAD) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    for line in head.strip().split("\r\n"):
        name, _, value = line.partition(": ")
        msg[name] = value
    return msg


def _bytes(msg: EmailMessage) -> bytes:
    # The original header block exactly as written above; the body as the email package makes it.
    out = msg.as_bytes(policy=email.policy.SMTP)
    body = out[out.index(b"\r\n\r\n") + 4 :]
    mime_head = b"".join(
        f"{k}: {v}\r\n".encode()
        for k, v in msg.items()
        if k.lower().startswith(("content-", "mime-"))
    )
    # Stored messages have CRLF line ends (delivery and APPEND make them so).
    body = re.sub(rb"(?<!\r)\n", b"\r\n", body)
    return HEAD.encode() + mime_head + b"\r\n" + body + (b"" if body.endswith(b"\r\n") else b"\r\n")


def plain(text: str = "Hello <Bob> & all,\r\n\r\nsee you at noon.\r\n") -> bytes:
    m = _msg()
    m.set_content(text)
    return _bytes(m)


def html_only() -> bytes:
    m = _msg()
    m.set_content(
        "<html><head><style>p{color:red}</style></head><body><h1>News</h1>"
        "<p>Read the <a href='https://contoso.test/r'>report</a> now.</p>"
        "<ul><li>one</li><li>two</li></ul><script>alert(1)</script></body></html>",
        subtype="html",
    )
    return _bytes(m)


def alternative() -> bytes:
    m = _msg()
    m.set_content("Plain version\r\n")
    m.add_alternative("<p>HTML <b>version</b></p>", subtype="html")
    return _bytes(m)


def with_attachment() -> bytes:
    m = _msg()
    m.set_content("<p>See the <i>attached</i> file.</p>", subtype="html")
    m.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return _bytes(m)


def latin1() -> bytes:
    m = _msg()
    m.set_content(
        "Café crème für Jürgen\r\n".encode("iso-8859-1"),
        maintype="text",
        subtype="plain",
        params={"charset": "iso-8859-1"},
        cte="quoted-printable",
    )
    m.add_attachment(b"col1;col2\r\n", maintype="text", subtype="csv", filename="t.csv")
    return _bytes(m)


def koi8_html() -> bytes:
    m = _msg()
    m.set_content(
        "<p>Привет, мир</p>".encode("koi8-r"),
        maintype="text",
        subtype="html",
        params={"charset": "koi8-r"},
        cte="8bit",
    )
    return _bytes(m)


def meeting_request() -> bytes:
    m = _msg()
    m.set_content("You are invited.\r\n")
    m.add_alternative("<p>You are <b>invited</b>.</p>", subtype="html")
    m.add_alternative(ICS, subtype="calendar", params={"method": "REQUEST"})
    return _bytes(m)


def enriched() -> bytes:
    m = _msg()
    m.set_content("<bold>Now</bold> is the time\r\n\r\nfor <<all> good men\r\n", subtype="enriched")
    return _bytes(m)


MESSAGES = {
    "plain": plain,
    "html": html_only,
    "alternative": alternative,
    "attachment": with_attachment,
    "latin1": latin1,
    "koi8": koi8_html,
    "meeting": meeting_request,
    "enriched": enriched,
}
CHANGING = [f for f in F if f not in (F.BestBodyFormat, F.Tnef)]
BODY_TYPES = {
    F.TextOnly: ["text/plain"],
    F.HtmlOnly: ["text/html"],
    F.HtmlAndTextAlternative: ["text/plain", "text/html"],
    F.TextEnrichedOnly: ["text/enriched"],
    F.TextEnrichedAndTextAlternative: ["text/plain", "text/enriched"],
}


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body_types(msg: EmailMessage) -> list[str]:
    """The content types of the body: the leaf, or the alternative's text children."""
    node = msg
    while node.get_content_type() == "multipart/mixed":
        node = next(node.iter_parts())
    if node.get_content_type() == "multipart/alternative":
        return [
            p.get_content_type()
            for p in node.iter_parts()
            if p.get_content_type() != "text/calendar"
        ]
    return [node.get_content_type()]


def attachments(msg: EmailMessage) -> list[tuple[str, bytes]]:
    return [
        (a.get_filename() or "", a.get_payload(decode=True))
        for a in msg.walk()
        if a.get_content_disposition() == "attachment"
    ]


def assert_valid(raw: bytes) -> EmailMessage:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in the output"
    msg = parsed(raw)
    bodystructure.analyze(raw)  # what IMAP BODYSTRUCTURE/ENVELOPE come from
    for part in msg.walk():
        boundary = part.get_boundary()
        if part.is_multipart() and boundary:
            assert f"--{boundary}--".encode() in raw
    return msg


# --- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("fmt", CHANGING)
def test_every_format_gives_valid_mime_with_the_expected_parts(name: str, fmt: F) -> None:
    raw = MESSAGES[name]()
    out = convert(raw, fmt)
    msg = assert_valid(out)
    assert body_types(msg) == BODY_TYPES[fmt]
    original = parsed(raw)
    assert attachments(msg) == attachments(original)
    # The top-level header fields other than Content-* are the stored bytes.
    head = out[: out.index(b"\r\n\r\n") + 2]
    for line in HEAD.encode().split(b"\r\n")[:-1]:
        assert line + b"\r\n" in head
    assert msg["Subject"] == "Grüße"
    assert out.count(b"\r\nMIME-Version: 1.0\r\n") + out.startswith(b"MIME-Version") >= 1


@pytest.mark.parametrize("fmt", [F.BestBodyFormat, F.Tnef])
@pytest.mark.parametrize("name", MESSAGES)
def test_as_received_formats_return_the_stored_bytes(name: str, fmt: F) -> None:
    raw = MESSAGES[name]()
    assert convert(raw, fmt) is raw


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("plain", F.TextOnly),
        ("html", F.HtmlOnly),
        ("alternative", F.HtmlAndTextAlternative),
        ("enriched", F.TextEnrichedOnly),
        ("meeting", F.HtmlAndTextAlternative),
    ],
)
def test_message_already_in_the_format_is_untouched(name: str, fmt: F) -> None:
    raw = MESSAGES[name]()
    assert convert(raw, fmt) is raw


def test_html_becomes_readable_text_with_links() -> None:
    msg = parsed(convert(html_only(), F.TextOnly))
    text = msg.get_content()
    assert "News\n\nRead the report <https://contoso.test/r> now." in text.replace("\r\n", "\n")
    assert "* one" in text and "* two" in text
    assert "alert" not in text and "color:red" not in text


def test_plain_becomes_escaped_html_paragraphs() -> None:
    msg = parsed(convert(plain(), F.HtmlOnly))
    html = msg.get_content()
    assert "<p>Hello &lt;Bob&gt; &amp; all,</p>" in html and "<p>see you at noon.</p>" in html


def test_non_utf8_text_is_decoded_and_reused_parts_keep_their_charset() -> None:
    out = convert(latin1(), F.HtmlAndTextAlternative)
    msg = parsed(out)
    alt = next(msg.iter_parts())
    plain_part, html_part = alt.iter_parts()
    assert plain_part.get_content_charset() == "iso-8859-1"  # the original part, as stored
    assert "Café crème für Jürgen" in html_part.get_content()
    text = parsed(convert(koi8_html(), F.TextOnly)).get_content()
    assert "Привет, мир" in text


def test_meeting_request_alternative_keeps_the_calendar_in_every_format() -> None:
    for fmt in CHANGING:
        msg = parsed(convert(meeting_request(), fmt))
        kinds = [p.get_content_type() for p in msg.walk()]
        assert "text/calendar" in kinds, fmt


def test_html_related_images_stay_with_html_and_become_attachments_without_it() -> None:
    m = _msg()
    m.set_content("<p>Logo: <img src='cid:logo@x'></p>", subtype="html")
    m.add_related(b"GIF89a...", maintype="image", subtype="gif", cid="<logo@x>")
    raw = _bytes(m)
    alt = parsed(convert(raw, F.HtmlAndTextAlternative))
    kinds = [p.get_content_type() for p in alt.walk()]
    assert kinds == [
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/gif",
    ]
    text_only = parsed(convert(raw, F.TextOnly))
    assert [p.get_content_type() for p in text_only.walk()] == [
        "multipart/mixed",
        "text/plain",
        "image/gif",
    ]


def test_signed_and_malformed_messages_are_delivered_as_received() -> None:
    signed = (
        HEAD + 'MIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary="b"; '
        'protocol="application/pgp-signature"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n'
        "<p>x</p>\r\n--b\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--b--\r\n"
    ).encode()
    assert convert(signed, F.TextOnly) is signed
    headless = b"just some text\r\nwithout any header\r\n"
    assert convert(headless, F.HtmlOnly) is headless
    no_body = HEAD.encode()
    assert convert(no_body, F.HtmlOnly) is no_body


CORPUS_FILES = corpus_paths()


def test_corpus_messages_in_every_format_stay_valid_mime() -> None:
    changed = 0
    for path in CORPUS_FILES:
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        before = sum(1 for p in parsed(raw).walk() if p.get_content_disposition() == "attachment")
        for fmt in CHANGING:
            out = convert(raw, fmt)
            if out is raw:
                continue
            changed += 1
            msg = assert_valid(out)
            after = sum(1 for p in msg.walk() if p.get_content_disposition() == "attachment")
            assert after >= before, (path.name, fmt)
    assert changed > 50


# --- text conversions -------------------------------------------------------------------


def test_enriched_conversions_follow_rfc1896() -> None:
    assert textconv.text_to_enriched("a<b\nc\n\nd") == "a<<b\n\nc\n\n\nd\n"
    assert textconv.enriched_to_text("<bold>a</bold><<b\n\nc\nd<param>x</param>") == "a<b\nc d\n"
    for text in ("one line\n", "a\nb\n\nc <x>\n"):
        assert textconv.enriched_to_text(textconv.text_to_enriched(text)) == text


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.sampled_from(CHANGING),
)
def test_any_text_body_converts_to_valid_mime(text: str, fmt: F) -> None:
    m = _msg()
    m.set_content(text or "x", subtype="html" if fmt is F.TextOnly else "plain")
    assert_valid(convert(_bytes(m), fmt))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_html_to_text_never_fails(source: str) -> None:
    assert textconv.html_to_text(source).endswith("\n")


# --- calendar ---------------------------------------------------------------------------

OWA = OwaVirtualDirectorySettings(
    InternalUrl="https://mbx01.contoso.test/owa", ExternalUrl="https://mail.contoso.com/owa"
)


def test_calendar_option_chooses_the_link_base() -> None:
    imap = ImapSettings()
    assert cal.link_base(Cal.iCalendar, imap, OWA) is None
    assert cal.link_base(Cal.IntranetUrl, imap, OWA) == "https://mbx01.contoso.test/owa"
    assert cal.link_base(Cal.InternetUrl, imap, OWA) == "https://mail.contoso.com/owa"
    inside_only = OwaVirtualDirectorySettings(InternalUrl="https://in/owa")
    assert cal.link_base(Cal.InternetUrl, imap, inside_only) == "https://in/owa"
    custom = ImapSettings(CalendarItemRetrievalOption="Custom", OwaServerUrl="https://OwaServer01")
    assert cal.link_base(Cal.Custom, custom, OWA) == "https://OwaServer01"


def test_calendar_part_becomes_a_link_and_nothing_else_changes() -> None:
    raw = meeting_request()
    item = ItemRef("alice", "INBOX", 77, 5)
    out = render(raw, Options(calendar_base="https://mbx01.contoso.test/owa"), item)
    msg = assert_valid(out)
    kinds = [p.get_content_type() for p in msg.walk()]
    assert "text/calendar" not in kinds
    link_part = list(next(iter([msg])).iter_parts())[-1]
    text = link_part.get_content()
    assert "https://mbx01.contoso.test/owa/calendar/alice/77/5" in text
    assert "Meeting request: Budget review" in text and "Where: Room 7" in text
    assert "When: 2024-03-05 14:00 UTC - 2024-03-05 15:00 UTC" in text
    # Without the item (no place to link to) the calendar stays.
    assert render(raw, Options(calendar_base="https://x"), None) == raw
    assert cal.describe(cal.calendar_part(raw) or "")["SUMMARY"] == "Budget review"


def test_top_level_calendar_message_and_format_together() -> None:
    m = _msg()
    m.set_content(ICS, subtype="calendar")
    raw = _bytes(m)
    out = render(raw, Options(F.HtmlOnly, "https://in/owa"), ItemRef("bob", "INBOX", 1, 2))
    msg = assert_valid(out)
    assert msg.get_content_type() == "text/html"
    assert "https://in/owa/calendar/bob/1/2" in msg.get_content()


def test_folded_ics_lines_are_unfolded() -> None:
    info = cal.describe("BEGIN:VEVENT\r\nSUMMARY:Long\r\n  title\\, really\r\nEND:VEVENT\r\n")
    assert info["SUMMARY"] == "Long title, really"


# --- options ----------------------------------------------------------------------------


def test_mailbox_override_beats_the_server_only_without_protocol_defaults() -> None:
    pop = PopSettings(
        MessageRetrievalMimeFormat="HtmlOnly",
        CalendarItemRetrievalOption="IntranetUrl",
        SuppressReadReceipt=True,
    )
    box = Mailbox(
        PrimarySmtpAddress="a@contoso.test",
        Server="MBX01",
        PopMessagesRetrievalMimeFormat="TextOnly",
        PopEnableExactRFC822Size=True,
        PopForceICalForCalendarRetrievalOption=True,
    )
    assert effective_options("POP3", box, pop, OWA) == Options(
        F.HtmlOnly, "https://mbx01.contoso.test/owa", False, True
    )
    box.PopUseProtocolDefaults = False
    assert effective_options("POP3", box, pop, OWA) == Options(F.TextOnly, None, True, False)
    # The IMAP switches are separate.
    assert effective_options("IMAP4", box, ImapSettings(), OWA).format is F.BestBodyFormat
    assert Options().as_stored and not Options(F.TextOnly).as_stored
    assert Options(F.Tnef).as_stored and not Options(calendar_base="x").as_stored


def test_options_for_reads_the_mailbox_and_its_servers_virtual_directory() -> None:
    s = default_settings()
    s.Mailboxes["alice"] = Mailbox(
        PrimarySmtpAddress="alice@contoso.test",
        Server="MBX01",
        ImapUseProtocolDefaults=False,
        ImapMessagesRetrievalMimeFormat="HtmlAndTextAlternative",
    )
    s.Servers["MBX01"].ImapSettings.CalendarItemRetrievalOption = Cal.IntranetUrl
    opts = options_for(s, "MBX01", "IMAP4", "alice@contoso.test")
    assert opts.format is F.HtmlAndTextAlternative
    assert opts.calendar_base == s.Servers["MBX01"].OwaVirtualDirectory.InternalUrl


# --- cache ------------------------------------------------------------------------------


def test_cache_renders_once_per_message_and_options_and_keeps_sizes_after_eviction() -> None:
    cache = RenderCache(max_bytes=10_000)
    item = ItemRef("alice", "INBOX", 1, 1)
    loads = []

    def load() -> bytes:
        loads.append(1)
        return html_only()

    first = cache.rendered(load, Options(F.TextOnly), item)
    again = cache.rendered(load, Options(F.TextOnly), item)
    assert first is again and cache.renders == 1 and len(loads) == 1
    other = cache.rendered(load, Options(F.HtmlAndTextAlternative), item)
    assert other is not first and cache.renders == 2
    # Fill past the byte bound: the entry goes, its size stays known without a read.
    for uid in range(2, 40):
        cache.rendered(html_only(), Options(F.TextOnly), ItemRef("alice", "INBOX", 1, uid))
    assert cache.get(cache.key(Options(F.TextOnly), item)) is None
    assert cache.size(load, Options(F.TextOnly), item) == first.size and len(loads) == 2
    # A message the options leave alone is held as a marker, not a copy.
    same = cache.rendered(plain(), Options(F.TextOnly), ItemRef("alice", "INBOX", 1, 99))
    assert same.data is None and same.size == len(plain())
    info = cache.info(first)
    assert info.size == first.size and cache.info(first) is info


def test_default_cache_is_shared() -> None:
    assert isinstance(CACHE, RenderCache)


# --- read receipts ----------------------------------------------------------------------


def _asking(extra: str = "") -> bytes:
    return plain().replace(
        b"X-Keep:",
        f"Disposition-Notification-To: Alice <alice@contoso.test>\r\n{extra}X-Keep:".encode(),
    )


def test_receipt_address_rules() -> None:
    assert receipts.receipt_address(plain()) is None
    assert receipts.receipt_address(_asking()) == "alice@contoso.test"
    assert (
        receipts.receipt_address(_asking("Return-Path: <alice@contoso.test>\r\n"))
        == "alice@contoso.test"
    )
    assert receipts.receipt_address(_asking("Return-Path: <other@contoso.test>\r\n")) is None
    two = _asking().replace(
        b"To: Alice <alice@contoso.test>\r\n", b"To: Alice <alice@contoso.test>, x@y.test\r\n", 1
    )
    assert receipts.receipt_address(two) is None
    report = _asking().replace(
        b"Content-Type: text/plain",
        b"Content-Type: multipart/report;\r\n report-type=disposition-notification; boundary=z\r\nX-Was: text/plain",
        1,
    )
    assert receipts.receipt_address(report) is None


def test_mdn_is_a_valid_disposition_notification() -> None:
    raw = _asking()
    mdn = receipts.build_mdn(
        raw,
        to="alice@contoso.test",
        final_recipient="bob@contoso.test",
        display_name="Bob",
        fqdn="mbx01.contoso.test",
    )
    msg = assert_valid(mdn)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    kinds = [p.get_content_type() for p in msg.iter_parts()]
    assert kinds == ["text/plain", "message/disposition-notification", "text/rfc822-headers"]
    assert msg["Subject"] == "Read: Grüße" and msg["To"] == "alice@contoso.test"
    report = mdn.split(b"message/disposition-notification\r\n\r\n", 1)[1]
    assert b"Final-Recipient: rfc822;bob@contoso.test\r\n" in report
    assert b"Original-Message-ID: <m1@contoso.test>\r\n" in report
    assert b"Disposition: automatic-action/MDN-sent-automatically; displayed\r\n" in report
    assert receipts.receipt_address(mdn) is None  # never an MDN for an MDN


def test_receipt_sent_once_and_spooled_for_local_and_remote(tmp_path: Path) -> None:
    """Receipts never go into a mailbox store directly: the submission spool takes them, with
    the local recipient's mailbox and server, for the delivery service of that server."""
    home = Home.resolve(tmp_path / "home")
    s = default_settings()
    for name in ("alice", "bob"):
        s.Mailboxes[name] = Mailbox(PrimarySmtpAddress=f"{name}@contoso.test", Server="MBX01")
    store = open_store(home, "MBX01")
    try:
        sender = receipts.ReceiptSender(lambda: s, spool_submit(home, "MBX01"))
        bob = store.mailbox("bob")
        uid = bob.append("INBOX", _asking()).uid
        assert sender.downloaded(bob, "INBOX", uid, frozenset(), "bob", _asking())
        flags = bob.snapshot("INBOX").rows[0].flags
        assert receipts.MDN_SENT in flags
        assert not sender.downloaded(bob, "INBOX", uid, frozenset(), "bob", _asking())  # claimed
        assert not sender.downloaded(bob, "INBOX", uid, flags, "bob", _asking())
        assert store.mailbox("alice").snapshot("INBOX").rows == []
        [local] = [
            QueueEntry.from_json(p.read_bytes()) for p in (home.queue / "MBX01").glob("*.json")
        ]
        assert local.mail_from == ""
        assert [(r.address, r.mailbox, r.server) for r in local.recipients] == [
            ("alice@contoso.test", "alice", "MBX01")
        ]
        mdn = (home.queue / "MBX01" / f"{local.id}.eml").read_bytes()
        assert b"report-type=disposition-notification" in mdn and b"From: bob@contoso.test" in mdn
        (home.queue / "MBX01" / f"{local.id}.json").unlink()
        remote = _asking().replace(b"Alice <alice@contoso.test>", b"<carol@fabrikam.test>")
        uid2 = bob.append("INBOX", remote).uid
        assert sender.downloaded(bob, "INBOX", uid2, frozenset(), "bob", remote)
        spooled = list((home.queue / "MBX01").glob("*.json"))
        assert len(spooled) == 1
        assert re.search(rb'"mail_from": ""', spooled[0].read_bytes())
    finally:
        store.close()


def test_receipt_goes_only_through_the_submit_it_was_given(tmp_path: Path) -> None:
    """The sender has no way into a mailbox or a spool of its own: what it sends is what
    `submit` receives, and a submit that fails leaves the download alone (no receipt)."""
    home = Home.resolve(tmp_path / "home")
    s = default_settings()
    for name in ("alice", "bob"):
        s.Mailboxes[name] = Mailbox.model_validate(
            {"PrimarySmtpAddress": f"{name}@contoso.test", "Server": "MBX01"}
        )
    handed: list[tuple[str, str | None, str | None, bytes]] = []

    def submit(address: str, mailbox: str | None, server: str | None, message: bytes) -> None:
        handed.append((address, mailbox, server, message))

    def broken(address: str, mailbox: str | None, server: str | None, message: bytes) -> None:
        raise OSError("spool full")

    store = open_store(home, "MBX01")
    try:
        bob = store.mailbox("bob")
        uid = bob.append("INBOX", _asking()).uid
        sender = receipts.ReceiptSender(lambda: s, submit)
        assert sender.downloaded(bob, "INBOX", uid, frozenset(), "bob", _asking())
        [(address, mailbox, server, mdn)] = handed
        assert (address, mailbox, server) == ("alice@contoso.test", "alice", "MBX01")
        assert b"report-type=disposition-notification" in mdn
        uid2 = bob.append("INBOX", _asking()).uid
        assert not receipts.ReceiptSender(lambda: s, broken).downloaded(
            bob, "INBOX", uid2, frozenset(), "bob", _asking()
        )
        assert not (home.queue / "MBX01").exists()
    finally:
        store.close()
