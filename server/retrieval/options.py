"""The retrieval settings in force for one mailbox and protocol.

Set-CASMailbox's Pop*/Imap* switches count only when the mailbox's *UseProtocolDefaults is
$false (reference section 3); otherwise the server's PopSettings / ImapSettings apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.retrieval import calendar
from server.retrieval.render import changes_bytes
from server.settings.models import Mailbox, OwaVirtualDirectorySettings, ProtocolSettings, Settings
from server.settings.types import MimeTextFormat

IMAP = "IMAP4"
POP = "POP3"


@dataclass(frozen=True)
class Options:
    format: MimeTextFormat = MimeTextFormat.BestBodyFormat
    calendar_base: str | None = None  # None: meeting requests as iCalendar
    exact_size: bool = False
    suppress_read_receipt: bool = False

    @property
    def as_stored(self) -> bool:
        """True when clients get the stored bytes (the fast path: nothing to render)."""
        return self.calendar_base is None and not changes_bytes(self.format)

    @property
    def key(self) -> tuple[str, str | None]:
        """What the rendered bytes depend on (the cache key part)."""
        return self.format.value, self.calendar_base


AS_STORED = Options()


def effective_options(
    protocol: str,
    mailbox: Mailbox | None,
    settings: ProtocolSettings,
    owa: OwaVirtualDirectorySettings | None = None,
) -> Options:
    """protocol: "IMAP4" or "POP3"; settings: that protocol's server settings; owa: the
    virtual directory of the mailbox's server (for IntranetUrl / InternetUrl links)."""
    prefix = "Imap" if protocol == IMAP else "Pop"
    own = mailbox is not None and not getattr(mailbox, f"{prefix}UseProtocolDefaults")
    if own:
        assert mailbox is not None
        fmt = getattr(mailbox, f"{prefix}MessagesRetrievalMimeFormat")
        exact = getattr(mailbox, f"{prefix}EnableExactRFC822Size")
        suppress = getattr(mailbox, f"{prefix}SuppressReadReceipt")
        force_ical = getattr(mailbox, f"{prefix}ForceICalForCalendarRetrievalOption")
    else:
        fmt = settings.MessageRetrievalMimeFormat
        exact = settings.EnableExactRFC822Size
        suppress = settings.SuppressReadReceipt
        force_ical = False
    base = (
        None
        if force_ical
        else calendar.link_base(settings.CalendarItemRetrievalOption, settings, owa)
    )
    return Options(MimeTextFormat(fmt), base, bool(exact), bool(suppress))


def options_for(settings: Settings, server: str, protocol: str, mailbox: str) -> Options:
    """The options for `mailbox` retrieved through `server`'s back end, from live settings."""
    srv = settings.server(server)
    proto = srv.ImapSettings if protocol == IMAP else srv.PopSettings
    found = settings.mailbox(mailbox)
    box = found[1] if found else None
    owa = srv.OwaVirtualDirectory
    if box is not None:
        try:
            owa = settings.server(box.Server).OwaVirtualDirectory
        except KeyError:
            pass
    return effective_options(protocol, box, proto, owa)
