"""The calendar-item request of the delivery hop (server/delivery/items.py): what the web
sends, what the delivery service takes, and that anything else gets no answer at all."""

from __future__ import annotations

import pytest

from server.delivery import items


def test_request_round_trips_any_mailbox_name() -> None:
    for mailbox in ("alice", "Jürgen Weiß", "a b/c"):
        line = items.request(mailbox, 4294967295, 17)
        assert line.endswith(b"\r\n") and len(line) <= items.MAX_REQUEST
        assert items.parse_request(line) == (mailbox, 4294967295, 17)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"ITEM alice 1 2",  # not terminated
        b"ITEM ! 1 2\r\n",  # not base64url
        b"ITEM YWxpY2U 1 -2\r\n",
        b"ITEM YWxpY2U 12345678901 2\r\n",  # more digits than a UIDVALIDITY has
        b"ITEM YWxpY2U 1 2 3\r\n",
        b"item YWxpY2U 1 2\r\n",
        b"MAIL FROM:<a@b>\r\n",  # LMTP is not spoken to this caller
        b"ITEM /w 1 2\r\n",
        b"ITEM _w 1 2\r\n",  # decodes to bytes that are not UTF-8
    ],
)
def test_anything_but_one_item_line_is_refused(line: bytes) -> None:
    with pytest.raises(items.ItemRequestError):
        items.parse_request(line)


def test_answer_is_the_text_or_none() -> None:
    assert items.answer(None) == b"NONE\r\n"
    ics = "BEGIN:VCALENDAR\r\nSUMMARY:Grüße\r\nEND:VCALENDAR\r\n"
    data = ics.encode("utf-8")
    assert items.answer(ics) == b"ITEM %d\r\n" % len(data) + data
    assert items.answer("x" * (items.MAX_ITEM + 1)) == b"NONE\r\n"  # never more than MAX_ITEM
