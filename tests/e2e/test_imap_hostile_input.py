"""Hostile input to the IMAP back end. One message must not spoil its folder: a 48 KB
message of deeply nested MIME parts, delivered among normal ones, is answered like any
other by FETCH ENVELOPE, BODYSTRUCTURE, HEADER.FIELDS and SEARCH, and so are its
neighbours. A tag with 8-bit bytes gets an untagged BAD, never a mangled echo."""

from __future__ import annotations

import logging
import re

import pytest

from server.mail import mime
from tests.e2e.test_imap_backend import MSG, Backend
from tests.e2e.test_imap_backend import backend as imap_backend  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def nested(size: int = 48 * 1024) -> bytes:
    """Multiparts inside multiparts until the message is `size` octets."""
    head = b"From: Mallory <m@example.org>\r\nSubject: matryoshka\r\nMIME-Version: 1.0\r\n"
    opens, closes = [], []
    i = 0
    while len(head) + sum(map(len, opens)) + sum(map(len, closes)) < size - 64:
        opens.append(
            b'Content-Type: multipart/mixed; boundary="=_%d_="\r\n\r\n--=_%d_=\r\n' % (i, i)
        )
        closes.append(b"--=_%d_=--\r\n" % i)
        i += 1
    return (
        head
        + b"".join(opens)
        + b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
        + b"".join(reversed(closes))
    )


def test_deeply_nested_message_does_not_spoil_the_folder(
    imap_backend: Backend,  # noqa: F811
) -> None:
    box = imap_backend.inbox()
    box.append("INBOX", MSG)
    raw = nested()
    assert 40 * 1024 < len(raw) <= 48 * 1024
    box.append("INBOX", raw)
    box.append("INBOX", MSG.replace(b"Lunch", b"Dinner"))
    r = imap_backend.raw()
    assert " OK " in r.cmd("s SELECT INBOX")
    for items in (
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "BODY.PEEK[HEADER.FIELDS (SUBJECT)]",
        "BODY.PEEK[1.MIME]",
        "RFC822.SIZE",
    ):
        out = r.cmd(f"f FETCH 1:* ({items})")
        assert out.splitlines()[-1].startswith("f OK"), out[-300:]
        assert len(re.findall(r"^\* \d+ FETCH", out, re.M)) == 3, (items, out[-300:])
    out = r.cmd("e FETCH 2 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert '"matryoshka"' in out and "Subject: matryoshka" in out
    assert '"application" "octet-stream"' in r.cmd("b FETCH 2 BODYSTRUCTURE")
    for criteria, hits in (
        ("SUBJECT dinner", "3"),
        ("BODY noon", "1 3"),
        ("TEXT matryoshka", "2"),
        ("ALL", "1 2 3"),
        ("FROM mallory", "2"),
    ):
        out = r.cmd(f"s SEARCH {criteria}")
        assert f"* SEARCH {hits}\r\ns OK" in out, (criteria, out)
    r.close()


def test_a_message_the_parser_fails_on_costs_only_that_message(
    imap_backend: Backend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever goes wrong in the MIME analysis of one message (here: a parser bug, faked),
    it is logged once, that message is served as one opaque part, and the others are
    answered as usual."""
    real = mime.parse

    def buggy(raw: bytes) -> object:
        if b"X-Trigger" in raw:
            raise ValueError("parser bug")
        return real(raw)

    monkeypatch.setattr(mime, "parse", buggy)
    box = imap_backend.inbox()
    box.append("INBOX", MSG)
    with caplog.at_level(logging.WARNING, logger="mailctl"):
        box.append("INBOX", b"X-Trigger: 1\r\n" + MSG.replace(b"Lunch", b"Trap"))
        box.append("INBOX", MSG.replace(b"Lunch", b"Dinner"))
        r = imap_backend.raw()
        assert " OK " in r.cmd("s SELECT INBOX")
        for _ in range(2):
            out = r.cmd("f FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert out.splitlines()[-1].startswith("f OK"), out
            assert out.count("FETCH (") == 3 and '"Trap"' in out and '"Dinner"' in out
            assert "* SEARCH 2\r\n" in r.cmd("s SEARCH SUBJECT trap")
        r.close()
    failures = [rec for rec in caplog.records if "MIME analysis failed" in rec.getMessage()]
    assert len(failures) == 1


def test_eight_bit_tag_gets_untagged_bad_and_the_session_goes_on(
    imap_backend: Backend,  # noqa: F811
) -> None:
    r = imap_backend.raw()
    r.sock.sendall(b"t\xc3\xa9 NOOP\r\n")
    line = r.read_line()
    assert line.startswith(b"* BAD ") and b"\xef\xbf\xbd" not in line and b"?" not in line
    assert r.cmd("n1 NOOP").endswith("n1 OK NOOP completed")
    r.close()
