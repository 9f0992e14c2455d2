"""One rendering: calendar parts first (they may sit inside the body's alternative), then
the body format."""

from __future__ import annotations

from dataclasses import dataclass

from server.retrieval import calendar
from server.retrieval.options import Options
from server.retrieval.render import convert


@dataclass(frozen=True)
class ItemRef:
    """One stored message, for ever: folder UIDVALIDITY and UID never name another."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


def render(raw: bytes, options: Options, item: ItemRef | None) -> bytes:
    """The bytes a client retrieves under `options` (the stored bytes when nothing
    applies). Calendar links need the item; without one, calendar parts stay iCalendar."""
    data = raw
    if options.calendar_base is not None and item is not None:
        link = calendar.item_link(options.calendar_base, item.mailbox, item.uidvalidity, item.uid)
        data = calendar.replace_calendar(data, link)
    return convert(data, options.format)
