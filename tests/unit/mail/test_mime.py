"""server.mail.mime: hand-derived ENVELOPE / BODYSTRUCTURE (RFC 3501 section 7.4.2),
BODY[section] (section 6.4.5) and the SEARCH helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.mail import mime
from server.protocols.imap import bodystructure
from tests.unit.mail.test_mime_corpus import parse_whole

DATA = Path(__file__).resolve().parents[2] / "data" / "mime"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- hand-derived answers -------------------------------------------------------------------


def test_simple_text_message() -> None:
    raw = load("hand_01_simple.eml")
    info = bodystructure.analyze(raw)
    # Sender and Reply-To are absent, so they repeat From; Cc, Bcc, In-Reply-To are NIL.
    fred = b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
    assert info.envelope == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        + fred
        + b" "
        + fred
        + b" "
        + fred
        + b' ((NIL NIL "mooch" "owatagu.siam.example")) NIL NIL NIL'
        b' "<B27397-0100000@Blurdybloop.example>")'
    )
    # body: "Hello Joe, ... tomorrow?" CRLF = 55 octets, 1 line; a plain US-ASCII text
    # is sent in the canonical lower-case form (as Dovecot does).
    assert info.body == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 55 1)'
    assert info.bodystructure == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)'
    )
    assert info.header_len == len(raw) - 55
    assert info.size == len(raw)


def test_multipart_alternative_with_attachment() -> None:
    raw = load("hand_02_alternative.eml")
    info = bodystructure.analyze(raw)
    plain = b'("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "quoted-printable" 40 1'
    html = b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 33 0'
    pdf = (
        b'("application" "pdf" ("name" "report.pdf") "<part2@example.org>" "The report" "base64" 16'
    )
    assert info.bodystructure == (
        b"((" + plain + b" NIL NIL NIL NIL)" + html + b' NIL NIL NIL NIL) "alternative"'
        b' ("boundary" "inner") NIL NIL NIL)'
        + pdf
        + b' "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "report.pdf"'
        b' "size" "12")) ("en-GB" "fr") "http://example.org/report.pdf")'
        b' "mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert info.body == (b"((" + plain + b")" + html + b') "alternative")' + pdf + b') "mixed")')
    env = parse_whole(info.envelope)
    assert env[5] == [
        [None, None, b"bob", b"example.net"],
        [b"Carol Q.", None, b"carol", b"example.net"],
    ]
    assert env[8] == b"<question-7@example.net>"
    assert env[9] == b"<report-1@example.org>"
    # sections
    assert mime.fetch_section(raw, info, (1, 1)) == b"Caf=C3=A9 report attached.\r\nSecond line."
    assert mime.fetch_section(raw, info, (2,)) == b"JVBERi0xLjQKJcfs"
    assert mime.fetch_section(raw, info, (1,), "MIME") == (
        b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
    )
    assert mime.fetch_section(raw, info, (3,)) == b""
    assert mime.fetch_section(raw, info, (1, 1), "HEADER") == b""  # not a message/rfc822
    assert mime.fetch_section(raw, info, ()).endswith(b"This is the epilogue.\r\n")


def test_nested_message_rfc822() -> None:
    raw = load("hand_03_nested.eml")
    info = bodystructure.analyze(raw)
    inner_env = (
        b'(NIL "inner" (("Inner Person" NIL "inner" "example.com"))'
        b' (("Inner Person" NIL "inner" "example.com"))'
        b' (("Inner Person" NIL "inner" "example.com"))'
        b' ((NIL NIL "rcpt" "example.com")) NIL NIL NIL "<inner@example.com>")'
    )
    inner_body = (
        b'(("text" "plain" ("charset" "iso-8859-1") NIL NIL "8bit" 10 0 NIL NIL NIL NIL)'
        b'("text" "enriched" ("charset" "us-ascii") NIL NIL "7bit" 18 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "b2") NIL NIL NIL)'
    )
    assert info.bodystructure == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL "forwarded" "7bit" 348 '
        + inner_env
        + b" "
        + inner_body
        + b' 17 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)'
    )
    # 2 is the message/rfc822 part; 2.HEADER/2.TEXT are the encapsulated message's,
    # 2.1 and 2.2 the parts of its multipart body.
    inner = mime.fetch_section(raw, info, (2,))
    assert inner.startswith(b"From: Inner Person") and len(inner) == 348
    header = mime.fetch_section(raw, info, (2,), "HEADER")
    text = mime.fetch_section(raw, info, (2,), "TEXT")
    assert header + text == inner
    assert header.endswith(b'boundary="b2"\r\n\r\n')
    assert mime.fetch_section(raw, info, (2, 1)) == b"inner text"
    assert mime.fetch_section(raw, info, (2, 2), "MIME") == b"Content-Type: text/enriched\r\n\r\n"
    assert mime.fetch_section(raw, info, (2,), "MIME") == (
        b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
    )
    assert mime.fetch_section(raw, info, (2,), "HEADER.FIELDS", ["subject", "FROM"]) == (
        b"From: Inner Person <inner@example.com>\r\nSubject: inner\r\n\r\n"
    )
    assert mime.fetch_section(raw, info, (2, 3)) == b""
    # inside a non-multipart part only number 1 exists and names the part itself (Dovecot)
    assert mime.fetch_section(raw, info, (1, 1)) == mime.fetch_section(raw, info, (1,))
    assert mime.fetch_section(raw, info, (1, 2)) == b""


def test_groups_routes_and_encoded_words() -> None:
    raw = load("hand_04_groups.eml")
    info = bodystructure.analyze(raw)
    env = parse_whole(info.envelope)
    assert env[0] == b"Thu, 13 Feb 1969 23:32:54 -0330"
    # encoded words stay encoded, the two folded lines become one
    assert env[1] == (
        b"=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= "
        b"=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
    )
    assert env[2] == [[b"=?UTF-8?Q?Andr=C3=A9_Pirard?=", None, b"PIRARD", b"vm1.ulg.ac.be"]]
    assert env[3] == [[None, b"@route1,@route2", b"sender", b"relay.example"]]
    assert env[4] == [[None, None, b"nobody", b"MISSING_DOMAIN"]]
    assert env[5] == [
        [None, None, b"A Group", None],  # group start
        [b"Ed Jones", None, b"c", b"a.test"],
        [None, None, b"joe", b"where.test"],
        [b"John", None, b"jdoe", b"one.test"],
        [None, None, None, None],  # group end
    ]
    assert env[6] == [[None, None, b"Undisclosed recipients", None], [None, None, None, None]]
    assert env[7] == [
        [b'Quoted "name"', None, b"q", b"example.com"],
        [None, None, b"plain", b"example.com"],
    ]
    assert env[8] == b"<a@b> <c@d>"
    # RFC 2231 parameters are merged, not decoded (as Dovecot)
    assert parse_whole(info.bodystructure)[2] == [b"name*", b"utf-8''%E2%82%AC%20rates.txt"]
    # the SEARCH fields are decoded
    assert info.subject == "If you can read this you understand the example."
    assert info.from_ == "André Pirard <PIRARD@vm1.ulg.ac.be>"
    assert info.date_sent == datetime(
        1969, 2, 13, 23, 32, 54, tzinfo=timezone(-timedelta(hours=3, minutes=30))
    )
    assert info.message_id == "<testabcd.1234@silly.test>"
    assert info.in_reply_to == "<a@b> <c@d>"


def test_8bit_header_is_kept_as_bytes() -> None:
    raw = load("hand_09_8bit.eml")
    info = bodystructure.analyze(raw)
    env = parse_whole(info.envelope)
    assert env[1] == b"caf\xc3\xa9 double spaces"  # white space runs collapsed
    assert env[2] == [[b"J\xf6rg", None, b"j\xf6rg", b"example.com"]]
    assert b"{" in info.envelope  # 8-bit strings go out as literals
    assert mime.nul_safe(mime.fetch_section(raw, info, (1,))) == b"caf\xc3\xa9\x80nul\r\n"


# --- BODY[section] ---------------------------------------------------------------------------

FOLDED = (
    b"Received: from a\r\n\tby b\r\n"
    b"subject: folded\r\n  subject line\r\n"
    b"X-Other: 1\r\n"
    b"SUBJECT : second\r\n"
    b"\r\n"
    b"body\r\n"
)


def test_header_fields_keep_folding_and_match_case_insensitively() -> None:
    info = bodystructure.analyze(FOLDED)
    got = mime.fetch_section(FOLDED, info, (), "HEADER.FIELDS", ["Subject"])
    assert got == b"subject: folded\r\n  subject line\r\nSUBJECT : second\r\n\r\n"
    got = mime.fetch_section(FOLDED, info, (), "HEADER.FIELDS.NOT", ["subject", "received"])
    assert got == b"X-Other: 1\r\n\r\n"
    got = mime.fetch_section(FOLDED, info, (), "HEADER.FIELDS", ["received"], not_=True)
    assert got.startswith(b"subject:") and b"Received" not in got
    assert mime.fetch_section(FOLDED, info, (), "HEADER.FIELDS", ["nothing"]) == b"\r\n"
    # a non-multipart message: part 1 is its body, 1.MIME its header
    assert mime.fetch_section(FOLDED, info, (1,)) == b"body\r\n"
    assert mime.fetch_section(FOLDED, info, (1,), "MIME") == FOLDED[: info.header_len]
    assert mime.fetch_section(FOLDED, info, (2,)) == b""
    assert mime.fetch_section(FOLDED, info.part_map, (), "text") == b"body\r\n"
    assert mime.header_values(FOLDED, "subject") == ["folded  subject line", "second"]


def test_message_without_blank_line_is_all_header() -> None:
    raw = load("hand_05_noblank.eml")
    info = bodystructure.analyze(raw)
    assert info.header_len == len(raw)
    assert mime.fetch_section(raw, info, (), "TEXT") == b""
    assert parse_whole(info.bodystructure)[6:8] == [0, 0]


def test_part_map_survives_json() -> None:
    raw = load("hand_03_nested.eml")
    info = bodystructure.analyze(raw)
    again = bodystructure.MessageInfo.from_json(info.to_json())
    assert again == info
    assert mime.fetch_section(raw, again.part_map, (2, 1)) == b"inner text"
    assert again.part_map.children[1].children[0].kind == mime.MULTIPART
    assert again.part_map.children[1].kind == mime.MESSAGE


# --- SEARCH helpers ----------------------------------------------------------------------

B64_MSG = (
    b"From: =?utf-8?b?w4lsaXNl?= <elise@example.com>\r\n"
    b"Subject: =?iso-8859-1?q?R=E9union?=\r\n"
    b"Date: 3 Aug 2023 09:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=x\r\n"
    b"\r\n"
    b"--x\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + b"R3LDvMOfZSBhdXMgZGVyIFN0cmHDn2UK\r\n"  # "Grüße aus der Straße\n"
    b"--x\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Caf=E9 cr=\r\n=E8me</p>\r\n"
    b"--x\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"secretbinaryword\r\n"
    b"--x--\r\n"
)


def test_text_contains_decodes_parts() -> None:
    info = bodystructure.analyze(B64_MSG)
    # full Unicode case folding: ß matches SS
    assert mime.text_contains(B64_MSG, "GRÜSSE AUS", headers=False, body=True, info=info)
    assert mime.text_contains(B64_MSG, "straße", headers=False, body=True)
    assert not mime.text_contains(B64_MSG, "strasse aus", headers=False, body=True)
    assert mime.text_contains(B64_MSG, "café crème", headers=False, body=True)
    assert not mime.text_contains(B64_MSG, "secretbinaryword", headers=True, body=True)
    assert mime.text_contains(B64_MSG, "réunion", headers=True, body=False)
    assert not mime.text_contains(B64_MSG, "réunion", headers=False, body=True)
    assert mime.text_contains(B64_MSG, "élise", headers=True, body=False, info=info.part_map)


def test_search_fields_are_decoded() -> None:
    info = bodystructure.analyze(B64_MSG)
    assert info.subject == "Réunion"
    assert info.from_ == "Élise <elise@example.com>"
    assert info.to == "" and info.cc == "" and info.bcc == ""
    assert info.date_sent == datetime(2023, 8, 3, 9, 0, tzinfo=UTC)
    assert mime.header_values(B64_MSG, "FROM") == ["Élise <elise@example.com>"]
    assert mime.header_values(B64_MSG, "x-missing") == []
    assert bodystructure.analyze(b"Date: not a date\r\n\r\n").date_sent is None
    naive = bodystructure.analyze(b"Date: Thu, 3 Aug 2023 09:00:00 -0000\r\n\r\n").date_sent
    assert naive is not None and naive.tzinfo is not None


def test_address_search_text_is_the_parsed_list_written_out() -> None:
    """SEARCH FROM/TO/CC/BCC match the addresses as parsed (imaptest search-addresses):
    comments and white space inside an address don't hide it; a comment after it is its
    name; groups keep their names."""
    raw = (
        b"From: <user-from (comment)@ (comment) domain.org>\r\n"
        b"To: user-to@domain.org (RealTo)\r\n"
        b"Cc: team: one@x.test, two@x.test;, =?utf-8?q?J=C3=B6rg?= <j@x.test>\r\n"
        b"\r\nbody\r\n"
    )
    info = bodystructure.analyze(raw)
    assert info.from_ == "<user-from@domain.org>"
    assert info.to == "RealTo <user-to@domain.org>"
    assert info.cc == "team: <one@x.test>, <two@x.test>;, Jörg <j@x.test>"


# --- robustness and speed -------------------------------------------------------------------


def test_bare_lf_and_broken_input_do_not_crash() -> None:
    for raw in (
        b"",
        b"\r\n",
        b"\n\n",
        b"no header at all",
        b'Content-Type: multipart/mixed; boundary=""\r\n\r\n----\r\n',
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nX: y\n\nhi\n--b--\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"From: \x00\xff <\x00@\xff>\r\nSubject: \x00\r\n\r\n\x00",
        b'To: ((((((unclosed comment\r\nFrom: "unclosed quote\r\n\r\n',
    ):
        info = bodystructure.analyze(raw)
        parse_whole(info.envelope)
        parse_whole(info.bodystructure)
        assert (
            mime.fetch_section(raw, info, (), "HEADER") + mime.fetch_section(raw, info, (), "TEXT")
            == raw
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"MIME-Version: 1.0\r\n",
                b"From: a <b@c>, group: d@e;\r\n",
                b" folded\r\n",
                b"\r\n",
                b"--b\r\n",
                b"--b--\r\n",
                b"text line\r\n",
                b"\n",
                b"\x00\xff",
            ]
        ),
        max_size=30,
    )
)
def test_fuzz_structure_stays_consistent(chunks: list[bytes]) -> None:
    raw = b"".join(chunks)
    info = bodystructure.analyze(raw)
    parse_whole(info.envelope)
    parse_whole(info.body)
    parse_whole(info.bodystructure)

    def walk(part: mime.Part) -> None:
        assert 0 <= part.start <= part.body <= part.end <= len(raw)
        for c in part.children:
            assert part.body <= c.start and c.end <= part.end
            walk(c)

    walk(info.part_map)
    assert mime.fetch_section(raw, info, (1, 1), "MIME") in raw
