"""What the IMAP and POP3 back ends share."""

from __future__ import annotations

from server import retrieval
from server.retrieval.receipts import ReceiptSender
from server.settings.models import Mailbox, OwaVirtualDirectorySettings, ProtocolSettings, Settings


def render_for_retrieval(
    raw: bytes, *, protocol: str, mailbox: Mailbox | None, settings: ProtocolSettings,
    item: retrieval.ItemRef | None = None, owa: OwaVirtualDirectorySettings | None = None,
) -> bytes:
    """The bytes a client retrieves for a stored message: MessageRetrievalMimeFormat and
    CalendarItemRetrievalOption applied (server.retrieval), rendered once per message and
    options and cached. The stored bytes themselves when the options leave them alone
    (BestBodyFormat/Tnef with iCalendar: no parsing, no copy).

    protocol: "IMAP4" or "POP3"; mailbox: the user's directory entry (its per-mailbox
    overrides count when *UseProtocolDefaults is false); settings: the server's
    ImapSettings or PopSettings in force; item: which stored message this is (the cache key,
    and what calendar links point at; without it the cache keys on a digest of the bytes and
    calendar parts stay iCalendar); owa: the virtual directory of the mailbox's server."""
    options = retrieval.effective_options(protocol, mailbox, settings, owa)
    if options.as_stored:
        return raw
    return retrieval.CACHE.data(raw, options, item)


def retrieval_view(
    settings: Settings, server: str, protocol: str, mailbox: str, folder: str,
    uidvalidity: int, receipts: ReceiptSender | None = None,
) -> retrieval.RetrievalView:
    """The retrieval options of one folder, read now from the live settings: what a FETCH
    command or a POP3 session renders with (sizes, ENVELOPE, BODYSTRUCTURE and bytes all
    from the same rendering)."""
    options = retrieval.options_for(settings, server, protocol, mailbox)
    return retrieval.RetrievalView(options, mailbox, folder, uidvalidity, receipts=receipts)
