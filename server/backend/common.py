"""What the IMAP and POP3 back ends share."""

from __future__ import annotations

from server.settings.models import Mailbox, ProtocolSettings


def render_for_retrieval(
    raw: bytes, *, protocol: str, mailbox: Mailbox | None, settings: ProtocolSettings
) -> bytes:
    """The bytes a client retrieves for a stored message: the one place where
    MessageRetrievalMimeFormat, calendar items and read receipts will apply (a later
    step). Today: the stored bytes unchanged.

    protocol: "IMAP4" or "POP3"; mailbox: the user's directory entry (its per-mailbox
    overrides count when *UseProtocolDefaults is false); settings: the server's
    ImapSettings or PopSettings in force."""
    return raw
