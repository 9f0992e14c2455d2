"""Read receipts on download (SuppressReadReceipt $false): message disposition
notifications (MDN, RFC 8098) the server sends when POP3 RETR or an IMAP non-PEEK body fetch
downloads a message that asks for one (Disposition-Notification-To).

"On open" receipts are the client's business, so with SuppressReadReceipt $true the server
sends nothing. A message gets at most one receipt from the server: the keyword $MDNSent
(RFC 3503) is set through the store first, and only the session whose flag change took
effect sends, so two sessions downloading at once do not both send.

Delivery: the back end gives the sender a `submit` callable (server/backend/service.py wires
it to the submission spool of its server), and every receipt goes there, with a null
envelope sender as RFC 8098 section 2.1 requires (so an MDN never bounces back and forth).
The queue hands a receipt for a local mailbox to the delivery service of the server that
holds it (server/delivery/), as any other message: one way into a mailbox, with the queue's
retries, on whichever host that server runs. Retrieval itself imports no service: neither
submission, nor the web, nor the back ends (pyproject.toml's import contracts).
"""

from __future__ import annotations

import email.utils
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import Header

from server.mail import mime
from server.settings.models import Settings
from server.store import api

MDN_SENT = "$MDNSent"
log = logging.getLogger("mailctl.retrieval")

_REPORT = re.compile(
    rb"multipart/report[^\r\n]*(\r?\n[ \t][^\r\n]*)*disposition-notification", re.I
)


def _header(raw: bytes, name: str) -> list[str]:
    return mime.header_values(raw, name)


def receipt_address(raw: bytes) -> str | None:
    """The address an automatic MDN goes to, or None when none may be sent: no
    Disposition-Notification-To; more than one address in it; a Return-Path that differs
    (RFC 8098 section 2.1: then not automatically); or the message is itself an MDN
    (section 3.2.1: never an MDN for an MDN)."""
    values = _header(raw, "Disposition-Notification-To")
    if not values:
        return None
    addresses = {a.lower() for _, a in email.utils.getaddresses(values) if "@" in a}
    if len(addresses) != 1:
        return None
    (address,) = addresses
    paths = _header(raw, "Return-Path")
    if paths:
        path = email.utils.parseaddr(paths[0])[1].lower()
        if path and path != address:
            return None
    if _REPORT.search(_headers_of(raw)):
        return None
    return next(a for _, a in email.utils.getaddresses(values) if a.lower() == address)


def _headers_of(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end >= 0:
        return raw[: end + 2]
    end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[: end + 1]
    return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _one_line(value: str) -> str:
    return " ".join(value.split())


def build_mdn(
    raw: bytes,
    *,
    to: str,
    final_recipient: str,
    display_name: str,
    fqdn: str,
    now: datetime | None = None,
) -> bytes:
    """A multipart/report disposition notification (RFC 8098 section 3) for `raw`:
    a human-readable part, the machine-readable part, and the original's header."""
    now = now or datetime.now(UTC)
    subject = _one_line(mime.decode_words(" ".join(_header(raw, "Subject"))))
    msgid = _one_line(" ".join(_header(raw, "Message-ID")))
    sent = _one_line(" ".join(_header(raw, "Date")))
    original_rcpt = _header(raw, "Original-Recipient")
    boundary = "=_mdn_" + secrets.token_hex(12)
    sender = (
        email.utils.formataddr((display_name, final_recipient)) if display_name else final_recipient
    )
    subject_line = (
        Header(f"Read: {subject}", "utf-8").encode()
        if not subject.isascii()
        else f"Read: {subject}"
    )
    text = (
        "Your message\r\n\r\n"
        f"  To: {final_recipient}\r\n"
        f"  Subject: {subject}\r\n"
        f"  Sent: {sent}\r\n\r\n"
        f"was read on {email.utils.format_datetime(now)}.\r\n"
    )
    fields = [f"Reporting-UA: {fqdn}; mailctl"]
    if original_rcpt:
        fields.append(f"Original-Recipient: {_one_line(original_rcpt[0])}")
    fields.append(f"Final-Recipient: rfc822;{final_recipient}")
    if msgid:
        fields.append(f"Original-Message-ID: {msgid}")
    fields.append("Disposition: automatic-action/MDN-sent-automatically; displayed")
    head = (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject_line}\r\n"
        f"Date: {email.utils.format_datetime(now)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=fqdn)}\r\n"
        + (f"In-Reply-To: {msgid}\r\nReferences: {msgid}\r\n" if msgid else "")
        + "Auto-Submitted: auto-replied\r\n"  # RFC 3834: no auto-replies to this
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=disposition-notification;\r\n boundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/disposition-notification\r\n\r\n" + "\r\n".join(fields) + "\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    return head.encode("utf-8") + body.encode("utf-8") + _headers_of(raw) + tail.encode()


# Hands a message to submission with a null envelope sender, for one recipient:
# (address, its mailbox, that mailbox's server, message); the mailbox and server are None
# when the recipient is not one of ours. Blocking (the sender runs in a worker thread); raises
# when the message was not taken.
Submit = Callable[[str, str | None, str | None, bytes], None]


class ReceiptSender:
    """Sends the server's read receipts for the mailboxes of one back-end server, through
    `submit` (the back end's way into submission). It never writes into a mailbox store."""

    def __init__(self, settings: Callable[[], Settings], submit: Submit) -> None:
        self.settings, self.submit = settings, submit
        self.sent = 0

    def downloaded(
        self,
        box: api.MailboxStore,
        folder: str,
        uid: int,
        flags: frozenset[str],
        mailbox: str,
        raw: bytes,
    ) -> bool:
        """Call when a client downloaded a message (blocking). True if a receipt went out."""
        if MDN_SENT in flags:
            return False
        address = receipt_address(raw)
        if address is None:
            return False
        try:
            claimed = box.set_flags(folder, [uid], "+", [MDN_SENT]).changed
        except api.StoreError:
            return False
        if not claimed:
            return False  # another session set it first and sends
        try:
            self.send(mailbox, address, raw)
        except Exception:  # noqa: BLE001 - a receipt must never fail the download
            log.exception("event=mdn-failed mailbox=%s uid=%d", mailbox, uid)
            return False
        return True

    def send(self, mailbox: str, address: str, raw: bytes) -> None:
        settings = self.settings()
        found = settings.mailbox(mailbox)
        if found is None:
            return
        name, box = found
        fqdn = settings.server(box.Server).Fqdn
        mdn = build_mdn(
            raw,
            to=address,
            final_recipient=box.PrimarySmtpAddress,
            display_name=box.DisplayName,
            fqdn=fqdn,
        )
        target = settings.mailbox(address)
        if target is not None:
            self.submit(address, target[0], target[1].Server, mdn)
        else:
            self.submit(address, None, None, mdn)
        self.sent += 1
        log.info("event=mdn-sent mailbox=%s to=%s", name, address)
