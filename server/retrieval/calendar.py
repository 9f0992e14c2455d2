"""CalendarItemRetrievalOption: meeting requests as iCalendar, or as a link to the web service.

With IntranetUrl, InternetUrl or Custom every text/calendar part of a message becomes a short
text/plain part naming the item and linking to it on the web service, where the signed-in
user sees it and downloads the .ics (server.web.calendar). The link names the item
by mailbox, folder UIDVALIDITY and UID, which identify one stored message for ever.
"""

from __future__ import annotations

import re
from email.message import MIMEPart
from urllib.parse import quote

from server.retrieval.mimeutil import (
    assemble,
    header_block,
    parse,
    strip_to_entity,
    text_of,
    text_part,
)
from server.settings.models import OwaVirtualDirectorySettings, ProtocolSettings
from server.settings.types import CalendarItemRetrievalOption

_CALENDAR = re.compile(rb"text/calendar", re.I)
CALENDAR_PATH = "calendar"


def has_calendar(raw: bytes) -> bool:
    return _CALENDAR.search(raw) is not None


def link_base(
    option: CalendarItemRetrievalOption,
    settings: ProtocolSettings,
    owa: OwaVirtualDirectorySettings | None,
) -> str | None:
    """The URL links are built on, or None for iCalendar. InternetUrl falls back to the
    InternalUrl when no ExternalUrl is set (a link that works inside beats none), and either
    falls back to iCalendar when the virtual directory has no URL at all."""
    if option is CalendarItemRetrievalOption.Custom:
        return str(settings.OwaServerUrl) if settings.OwaServerUrl else None
    if owa is None:
        return None
    if option is CalendarItemRetrievalOption.IntranetUrl:
        url = owa.InternalUrl
    elif option is CalendarItemRetrievalOption.InternetUrl:
        url = owa.ExternalUrl or owa.InternalUrl
    else:
        return None
    return str(url) if url else None


def item_link(base: str, mailbox: str, uidvalidity: int, uid: int) -> str:
    return f"{base.rstrip('/')}/{CALENDAR_PATH}/{quote(mailbox, safe='')}/{uidvalidity}/{uid}"


# --- reading iCalendar -------------------------------------------------------------------


def unfold(ics: str) -> list[str]:
    """RFC 5545 section 3.1: a line starting with a space or tab continues the previous one."""
    lines: list[str] = []
    for line in ics.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return lines


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def describe(ics: str) -> dict[str, str]:
    """SUMMARY, DTSTART, DTEND, LOCATION, ORGANIZER, METHOD of the first event (values
    without parameters), for the text that replaces the calendar part and the web page."""
    wanted = {"SUMMARY", "DTSTART", "DTEND", "LOCATION", "ORGANIZER", "DESCRIPTION"}
    found: dict[str, str] = {}
    # Properties count only where they belong (RFC 5545 section 3.6): METHOD on the
    # VCALENDAR, the rest on the event itself. Outlook puts its VTIMEZONE (with DTSTART
    # 16010101T030000 of the STANDARD/DAYLIGHT rules) and VALARMs (with a DESCRIPTION)
    # around the VEVENT; their properties are not the event's.
    components: list[str] = []
    for line in unfold(ics):
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.split(";", 1)[0].upper()
        if key == "BEGIN":
            components.append(value.strip().upper())
            continue
        if key == "END":
            ended = components.pop() if components else ""
            if ended in ("VEVENT", "VTODO"):
                break
            continue
        inside = components[-1] if components else ""
        if key == "METHOD" and inside in ("VCALENDAR", ""):
            found.setdefault(key, value.strip())
        elif key in wanted and inside in ("VEVENT", "VTODO") and key not in found:
            found[key] = _unescape(value.strip()).removeprefix("mailto:").removeprefix("MAILTO:")
    return found


def _when(value: str) -> str:
    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(?:T(\d\d)(\d\d)(\d\d)?(Z?))?", value)
    if not m:
        return value
    y, mo, d, h, mi, _, z = m.groups()
    return f"{y}-{mo}-{d}" + (f" {h}:{mi}{' UTC' if z else ''}" if h else "")


def link_text(info: dict[str, str], link: str) -> str:
    kind = "Meeting request" if info.get("METHOD", "").upper() == "REQUEST" else "Calendar item"
    lines = [f"{kind}: {info.get('SUMMARY', '(no subject)')}"]
    if "DTSTART" in info:
        end = f" - {_when(info['DTEND'])}" if "DTEND" in info else ""
        lines.append(f"When: {_when(info['DTSTART'])}{end}")
    if "LOCATION" in info:
        lines.append(f"Where: {info['LOCATION']}")
    if "ORGANIZER" in info:
        lines.append(f"Organizer: {info['ORGANIZER']}")
    lines += ["", "View this item and download it as an iCalendar (.ics) file:", link, ""]
    return "\n".join(lines)


# --- rewriting ---------------------------------------------------------------------------


def _replace_in(node: MIMEPart, link: str) -> bool:
    """Replace the calendar parts below `node` (not inside attached messages)."""
    payload = node.get_payload()
    if not isinstance(payload, list) or node.get_content_maintype() != "multipart":
        return False
    changed = False
    for i, part in enumerate(payload):
        if not isinstance(part, MIMEPart):  # a str payload item: no part to look into
            continue
        if part.get_content_type() == "text/calendar":
            payload[i] = text_part(link_text(describe(text_of(part)), link), "plain")
            changed = True
        elif part.get_content_maintype() == "multipart":
            changed = _replace_in(part, link) or changed
    return changed


def replace_calendar(raw: bytes, link: str) -> bytes:
    """The message with each text/calendar part replaced by a text part linking to the
    item; the stored bytes when it has none (or cannot be parsed)."""
    if not has_calendar(raw) or header_block(raw) is None:
        return raw
    try:
        msg = parse(raw)
        if msg.get_content_type() == "text/calendar":
            return assemble(raw, text_part(link_text(describe(text_of(msg)), link), "plain"))
        if not _replace_in(msg, link):
            return raw
        return assemble(raw, strip_to_entity(msg))
    except Exception:  # noqa: BLE001 - a retrieval must never fail over a calendar part
        return raw


def calendar_part(raw: bytes) -> str | None:
    """The iCalendar text of the first text/calendar part of a stored message."""
    if not has_calendar(raw):
        return None
    try:
        msg = parse(raw)
    except Exception:  # noqa: BLE001
        return None
    stack: list[MIMEPart] = [msg]
    while stack:
        node = stack.pop(0)
        if node.get_content_type() == "text/calendar":
            return text_of(node)
        if node.get_content_maintype() == "multipart":
            stack.extend(node.iter_parts())
    return None
