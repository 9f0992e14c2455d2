"""What a calendar link's text and page say about an Outlook-style invitation: the event's
own properties, not those of the VTIMEZONE rules or alarms around it (issue 14)."""

from __future__ import annotations

from server.retrieval.calendar import describe, link_text

OUTLOOK_ICS = "\r\n".join(
    [
        "BEGIN:VCALENDAR",
        "METHOD:REQUEST",
        "PRODID:Microsoft Exchange Server 2010",
        "VERSION:2.0",
        "BEGIN:VTIMEZONE",
        "TZID:W. Europe Standard Time",
        "BEGIN:STANDARD",
        "DTSTART:16010101T030000",
        "TZOFFSETFROM:+0200",
        "TZOFFSETTO:+0100",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10",
        "END:STANDARD",
        "BEGIN:DAYLIGHT",
        "DTSTART:16010101T020000",
        "TZOFFSETFROM:+0100",
        "TZOFFSETTO:+0200",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3",
        "END:DAYLIGHT",
        "END:VTIMEZONE",
        "BEGIN:VEVENT",
        "ORGANIZER;CN=Bob:mailto:bob@contoso.test",
        "SUMMARY;LANGUAGE=en-US:Budget review",
        "DTSTART;TZID=W. Europe Standard Time:20261208T140000",
        "DTEND;TZID=W. Europe Standard Time:20261208T150000",
        "LOCATION;LANGUAGE=en-US:Room 7",
        "BEGIN:VALARM",
        "DESCRIPTION:REMINDER",
        "TRIGGER;RELATED=START:-PT15M",
        "ACTION:DISPLAY",
        "END:VALARM",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
)


def test_outlook_invitation_start_is_the_events() -> None:
    info = describe(OUTLOOK_ICS)
    assert info["DTSTART"] == "20261208T140000" and info["DTEND"] == "20261208T150000"
    assert info["METHOD"] == "REQUEST" and info["SUMMARY"] == "Budget review"
    assert "DESCRIPTION" not in info  # the alarm's text is not the event's
    text = link_text(info, "https://mail.contoso.test/calendar/x")
    assert "When: 2026-12-08 14:00 - 2026-12-08 15:00" in text and "1601" not in text
