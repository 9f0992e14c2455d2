"""APPEND extensions and what they share: literal8 and CATENATE parsing, streamed APPEND
literals (the reader's Spool), IMAP URLs (RFC 5092), the URLAUTH INTERNAL verifier
(RFC 4467), BINARY decoding (RFC 3516) and sessions using all of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import tracemalloc
from pathlib import Path

import pytest

from server.backend.imap.spool import BodySpool
from server.protocols.imap import binary, imapurl
from server.protocols.imap import requests as rq
from server.protocols.imap.lexer import Cursor
from server.protocols.imap.parser import parse_section
from server.protocols.imap.reader import CommandReader, parse_line
from server.store import SqliteMailStore, api
from tests.unit.backend.imap.test_imap_session import Client

# --- parser: literal8, CATENATE, URLAUTH commands ----------------------------------------


def args(line: bytes) -> rq.CommandArgs:
    event = parse_line(line)
    assert isinstance(event, rq.Command), event
    return event.args


def test_catenate_parts_parse() -> None:
    a = args(
        b'a APPEND box (\\Seen) CATENATE (TEXT {5+}\r\nhello URL "/INBOX/;uid=3"'
        b" TEXT ~{2+}\r\n\x00\x01)"
    )
    assert isinstance(a, rq.Append)
    (msg,) = a.messages
    assert msg.flags == ("\\Seen",) and msg.data == b""
    assert msg.catenate == (
        rq.CatText(b"hello"),
        rq.CatUrl("/INBOX/;uid=3"),
        rq.CatText(b"\x00\x01", True),
    )


def test_multiappend_mixes_catenate_and_literals() -> None:
    a = args(
        b'a APPEND box CATENATE (URL "/INBOX/;uid=1") (\\Answered) {3+}\r\nabc'
        b' "01-Jan-2020 10:00:00 +0000" ~{1+}\r\n\x00'
    )
    assert isinstance(a, rq.Append)
    first, second, third = a.messages
    assert first.catenate == (rq.CatUrl("/INBOX/;uid=1"),)
    assert second.flags == ("\\Answered",) and second.data == b"abc" and not second.binary
    assert third.binary and third.data == b"\x00" and third.date is not None


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND box CATENATE ()",
        b"a APPEND box CATENATE (FOO {1+}\r\nx)",
        b'a APPEND box CATENATE (TEXT "quoted is not a literal")',
        b"a APPEND box CATENATE (URL)",
        b'a APPEND box CATENATE (URL "/INBOX/;uid=1"',
        b"a LOGIN ~{3+}\r\nbob pw",
    ],
)
def test_bad_catenate_and_literal8_are_bad(line: bytes) -> None:
    assert isinstance(parse_line(line), rq.ParseError)


def test_urlauth_commands_parse() -> None:
    g = args(
        b'a GENURLAUTH "imap://a@h/INBOX/;uid=1;urlauth=authuser" internal'
        b' "imap://a@h/X/;uid=2;urlauth=anonymous" INTERNAL'
    )
    assert isinstance(g, rq.GenUrlAuth) and [m for _, m in g.requests] == ["INTERNAL", "INTERNAL"]
    assert args(b"a RESETKEY") == rq.ResetKey()
    assert args(b"a RESETKEY INBOX INTERNAL") == rq.ResetKey("INBOX", ("INTERNAL",))
    u = args(b'a URLFETCH "u1" ("u2" BINARY bodypartstructure) "u3"')
    assert u == rq.UrlFetch((("u1", None), ("u2", ("BINARY", "BODYPARTSTRUCTURE")), ("u3", None)))
    assert isinstance(parse_line(b'a URLFETCH ("u" FOO)'), rq.ParseError)
    assert isinstance(parse_line(b'a URLFETCH ("u" BINARY BODY)'), rq.ParseError)
    assert args(b'a URLFETCH ("u")') == rq.UrlFetch((("u", ()),))
    assert isinstance(parse_line(b'a GENURLAUTH "u"'), rq.ParseError)


# --- the reader streams APPEND literals ------------------------------------------------------


class RecordingSpool(rq.Spool):
    def __init__(self) -> None:
        self.size = 0
        self.chunks = 0
        self.discarded = False

    def write(self, data: bytes | bytearray) -> None:
        self.size += len(data)
        self.chunks += 1

    def discard(self) -> None:
        self.discarded = True


def streaming_reader() -> tuple[CommandReader, list[RecordingSpool]]:
    reader = CommandReader(max_literal_size=64 << 20)
    spools: list[RecordingSpool] = []

    def factory(size: int, binary_: bool) -> RecordingSpool:
        spools.append(RecordingSpool())
        return spools[-1]

    reader.spool_factory = factory
    return reader, spools


def test_big_append_literal_is_streamed_not_held() -> None:
    reader, spools = streaming_reader()
    size = 20 << 20
    reader.feed(b"a APPEND {5}\r\n")
    assert isinstance(reader.next_event(), rq.NeedContinuation)  # the mailbox name: kept
    reader.feed(b"INBOX {%d}\r\n" % size)
    assert isinstance(reader.next_event(), rq.NeedContinuation)
    chunk = b"x" * (64 * 1024 - 2) + b"\r\n"
    most = 0
    for _ in range(size // len(chunk)):
        reader.feed(chunk)
        assert reader.next_event() is None
        most = max(most, reader.in_memory)
    reader.feed(b"\r\n")
    event = reader.next_event()
    assert isinstance(event, rq.Command) and isinstance(event.args, rq.Append)
    data = event.args.message
    assert isinstance(data, rq.SpooledLiteral) and data.size == size
    assert spools[0].size == size and spools[0].chunks == size // len(chunk)
    assert most <= len(chunk) + 64  # never more than what one feed() brought
    assert event.args.mailbox == "INBOX"


def test_small_literals_stay_in_memory_and_failed_commands_drop_spools() -> None:
    reader, spools = streaming_reader()
    reader.feed(b"a APPEND INBOX {3+}\r\nabc\r\n")
    event = reader.next_event()
    assert isinstance(event, rq.Command) and event.args.message == b"abc" and not spools
    big = 70 * 1024
    reader.feed(b"b APPEND INBOX {%d+}\r\n" % big + b"y" * big + b" junk\r\n")
    assert isinstance(reader.next_event(), rq.ParseError)
    assert spools[0].discarded
    reader.feed(b"c APPEND INBOX {%d+}\r\n" % big + b"y" * 1000)
    assert reader.next_event() is None
    reader.discard_buffer()  # the connection went away mid-literal
    assert spools[1].discarded


def test_body_spool_converts_bare_lf_across_chunks() -> None:
    writer = api.BodyWriter()
    spool = BodySpool(writer, binary=False)
    for piece in (b"a\r", b"\nb\n", b"\n", b"c\r\n\x00"):
        spool.write(piece)
    assert writer.read() == b"a\r\nb\r\n\r\nc\r\n\x00" and spool.has_nul
    raw = api.BodyWriter()
    BodySpool(raw, binary=True).write(b"x\ny")
    assert raw.read() == b"x\ny"  # literal8: byte for byte


# --- IMAP URLs and URLAUTH ------------------------------------------------------------------------


def test_imap_urls_parse() -> None:
    u = imapurl.parse("/Sent%20Items;UIDVALIDITY=7/;uid=20/;section=1.2.MIME/;partial=5.10")
    assert (u.mailbox, u.uidvalidity, u.uid, u.partial) == ("Sent Items", 7, 20, (5, 10))
    assert u.section == rq.Section((1, 2), "MIME") and not u.absolute
    u = imapurl.parse(
        "imap://bob@mail.test:993/inbox/;UID=3;EXPIRE=2030-01-02T03:04:05Z"
        ";URLAUTH=user+bob:internal:" + "ab" * 32
    )
    assert (u.user, u.host, u.port, u.mailbox, u.access, u.mechanism) == (
        "bob",
        "mail.test",
        993,
        "INBOX",
        "user+bob",
        "INTERNAL",
    )
    assert u.rump.endswith(";URLAUTH=user+bob") and u.expire is not None
    assert imapurl.parse("/%E2%82%AC/;uid=1").mailbox == "\u20ac"


@pytest.mark.parametrize(
    "url",
    [
        "INBOX/;uid=1",
        "//host/INBOX/;uid=1",
        "/INBOX",
        "/INBOX/;uid=0",
        "/INBOX/;uid=x",
        "/INBOX;uidvalidity=0/;uid=1",
        "/INBOX/;uid=1/;section=2.BOGUS",
        "/INBOX/;uid=1/;partial=a",
        "/INBOX/;uid=1/;partial=1.0",
        "/INBOX/;uid=1;urlauth=authuser",
        "/INBOX/;uid=1/;foo=1",
        "imap://bob@h/INBOX/;uid=1;urlauth=nobody",
        "imap://bob@h/INBOX/;uid=1;urlauth=authuser:INTERNAL:12",
        "imap://bob@h/INBOX/;uid=1;expire=tomorrow;urlauth=authuser",
        "/IN BOX/;uid=1",
        "imap://h",
        "/%FF/;uid=1",
    ],
)
def test_bad_imap_urls_are_refused(url: str) -> None:
    with pytest.raises(imapurl.UrlError):
        imapurl.parse(url)


def test_internal_verifier_is_hmac_sha256_of_the_rump() -> None:
    key = os.urandom(32)
    rump = "imap://bob@h/INBOX/;uid=1;urlauth=authuser"
    token = imapurl.verifier(key, rump)
    assert token == hmac.new(key, rump.encode(), hashlib.sha256).hexdigest()
    assert imapurl.verify(key, imapurl.parse(f"{rump}:INTERNAL:{token}"))
    assert imapurl.verify(key, imapurl.parse(f"{rump}:internal:{token.upper()}"))
    assert not imapurl.verify(os.urandom(32), imapurl.parse(f"{rump}:INTERNAL:{token}"))
    assert not imapurl.verify(key, imapurl.parse(f"{rump}:OTHER:{token}"))
    other = rump.replace("uid=1", "uid=2")
    assert not imapurl.verify(key, imapurl.parse(f"{other}:INTERNAL:{token}"))
    assert not imapurl.verify(key, imapurl.parse(rump))


def test_urlauth_access_rules() -> None:
    def url(access: str) -> imapurl.ImapUrl:
        return imapurl.parse(f"imap://bob@h/INBOX/;uid=1;urlauth={access}")

    assert imapurl.authorized(url("anonymous"), None)
    assert not imapurl.authorized(url("authuser"), None)
    assert imapurl.authorized(url("authuser"), "alice")
    assert imapurl.authorized(url("user+alice"), "Alice")
    assert not imapurl.authorized(url("user+alice"), "bob")
    assert not imapurl.authorized(url("submit+alice"), "alice")


# --- BINARY decoding ---------------------------------------------------------------------------


def test_base64_and_qp_decoding() -> None:
    assert binary.decode_body(b"  aGVs \r\n bG8g\td29y\r\nbGQ=\r\n", "BASE64") == b"hello world"
    assert binary.decode_body(b"aGVsbG8", "base64") == b"hello"  # missing padding
    qp = b"a  \r\nb=\r\nc=3D=3d\r\nd = \t\r\ne=\r\n\r\n=XY"
    assert binary.decode_body(qp, "quoted-printable") == b"a\r\nbc==\r\nd e\r\n=XY"
    assert binary.decode_body(b"\x80\x00", "binary") == b"\x80\x00"
    assert binary.decode_body(b"x", "8bit") == b"x"
    assert binary.decode_body(b"x", "x-uuencode") is None


def test_literal8_only_when_nul() -> None:
    assert binary.literal(b"a\r\n") == b"{3}\r\na\r\n"
    assert binary.literal(b"a\x00") == b"~{2}\r\na\x00"


def test_nul_parts_become_base64_and_decode_back() -> None:
    body = b"\x00\x01\xff binary\r\n\r\n"
    msg = (
        b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nplain\r\n--x\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + body
        + b"\r\n--x--\r\n"
    )
    stored = binary.encode_nul_parts(msg)
    assert b"\x00" not in stored and stored.count(b"Content-Transfer-Encoding") == 1
    from server.protocols.imap import bodystructure

    info = bodystructure.analyze(stored)
    assert binary.decode_part(stored, info.part_map, (2,)) == body
    assert binary.decode_part(stored, info.part_map, (1,)) == b"plain"
    assert binary.encode_nul_parts(b"no nul\r\n") == b"no nul\r\n"


# --- the store: streamed bodies and URLAUTH keys -------------------------------------------------


def test_streamed_body_file_becomes_the_message(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        box = store.mailbox("bob")
        writer = box.new_body()
        writer.write(b"Subject: streamed\r\n\r\n")
        writer.write(b"body\r\n")
        name = writer.name  # type: ignore[attr-defined]
        assert (box.msgs / name).exists()
        result = box.append_many("INBOX", [api.NewMessage(writer, ["\\Seen"])])[0]
        assert box.body_path("INBOX", result.uid).name == name  # no copy was made
        assert box.read("INBOX", result.uid) == b"Subject: streamed\r\n\r\nbody\r\n"
        writer.discard()  # after the commit: nothing happens
        assert box.read("INBOX", result.uid)
        gone = box.new_body()
        gone.write(b"x")
        with pytest.raises(api.NoSuchFolder):
            box.append_many("Nope", [api.NewMessage(gone)])
        gone.discard()
        assert sorted(os.listdir(box.msgs)) == [name]


def test_urlauth_keys_per_folder_and_reset(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        box = store.mailbox("bob")
        assert box.urlauth_key("INBOX") is None
        key = box.urlauth_key("INBOX", create=True)
        assert key is not None and len(key) == 32 and box.urlauth_key("INBOX") == key
        box.create_folder("X")
        other = box.urlauth_key("X", create=True)
        assert other != key
        box.reset_urlauth_keys("X")
        assert box.urlauth_key("X") is None and box.urlauth_key("INBOX") == key
        box.urlauth_key("X", create=True)
        box.delete_folder("X")
        box.create_folder("X")
        assert box.urlauth_key("X") is None  # a new folder of the same name: no old key
        box.reset_urlauth_keys()
        assert box.urlauth_key("INBOX") is None
        with pytest.raises(api.NoSuchFolder):
            box.urlauth_key("Nope", create=True)


# --- sessions ------------------------------------------------------------------------------------

B64_MSG = (
    b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    b"--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"hello world").replace(b"\n", b"\r\n")
    + b"--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\n"
    b"zz\r\n--x--\r\n"
)


def test_binary_fetch_in_a_session() -> None:
    c = Client().login()
    c.box.append("INBOX", B64_MSG)
    c.select()
    out = c("f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<6.100>)")
    assert "BINARY.SIZE[1] 11 BINARY[1] {11}\r\nhello world BINARY[1]<6> {5}\r\nworld" in out
    assert "\\Seen" not in c("f FETCH 1 FLAGS")
    assert "f NO [UNKNOWN-CTE]" in c("f FETCH 1 BINARY.PEEK[2]")
    assert "f NO [UNKNOWN-CTE]" in c("f FETCH 1 BINARY[2]")
    assert "\\Seen" not in c("f FETCH 1 FLAGS")  # the refused FETCH changed nothing
    out = c("f FETCH 1 BINARY[1]")
    assert "\\Seen" in out and "f OK" in out


def test_multiappend_is_all_or_nothing_and_reports_every_uid() -> None:
    c = Client().login()
    out = c(b"a APPEND INBOX {8+}\r\nA: 1\r\n\r\n (\\Flagged) {8+}\r\nB: 2\r\n\r\n")
    m = re.search(r"a OK \[APPENDUID (\d+) 1:2\]", out)
    assert m, out
    out = c(b'a APPEND INBOX {8+}\r\nC: 3\r\n\r\n CATENATE (URL "/INBOX/;uid=99")')
    assert "a NO [BADURL /INBOX/;uid=99]" in out
    assert c.box.status("INBOX").messages == 2
    assert "a NO [TRYCREATE]" in c(b"a APPEND Nope {8+}\r\nC: 3\r\n\r\n")
    assert "a NO" in c(b"a APPEND INBOX {0+}\r\n")


def test_catenate_builds_from_text_and_urls() -> None:
    c = Client().login()
    c.box.append("INBOX", B64_MSG)
    out = c(
        b'a APPEND INBOX CATENATE (TEXT {14+}\r\nSubject: new\r\n URL "/INBOX/;uid=1/;section=1.MIME"'
        b' URL "/inbox;UIDVALIDITY=%d/;uid=1/;section=1/;partial=0.8" TEXT {2+}\r\n\r\n)'
        % c.box.status("INBOX").uidvalidity
    )
    assert "a OK [APPENDUID" in out, out
    assert c.box.read("INBOX", 2) == (
        b"Subject: new\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8g\r\n"
    )
    assert "[BADURL" in c(b'a APPEND INBOX CATENATE (URL "/INBOX;uidvalidity=1/;uid=1")')
    assert "[BADURL" in c(b'a APPEND INBOX CATENATE (URL "/INBOX/;uid=1/;section=7")')
    assert "[BADURL" in c(b'a APPEND INBOX CATENATE (URL "imap://carol@h/INBOX/;uid=1")')


def test_append_literal8_keeps_binary_data_retrievable() -> None:
    c = Client().login()
    msg = b"From: a@b\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\r\n\r\n"
    assert "a OK" in c(b"a APPEND INBOX ~{%d+}\r\n" % len(msg) + msg)
    c.select()
    out = c.send(b"f FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
    assert b"BODY[1] {14}\r\nAC3kDQoNCg==\r\n " in out  # stored as base64: no NUL on the wire
    assert b"BINARY[1] ~{7}\r\n\x00-\xe4\r\n\r\n BINARY.SIZE[1] 7" in out


def test_genurlauth_urlfetch_resetkey() -> None:
    c = Client().login()
    c.box.append("INBOX", B64_MSG)
    rump = "imap://alice@contoso.test/INBOX/;uid=1/;section=1;urlauth=user+alice"
    out = c(f'g GENURLAUTH "{rump}" INTERNAL')
    m = re.search(r'\* GENURLAUTH "([^"]+)"', out)
    assert m and "g OK" in out, out
    url = m.group(1)
    assert url.startswith(rump + ":INTERNAL:")
    out = c(f'u URLFETCH "{url}" ("{url}" BINARY BODYPARTSTRUCTURE) "{rump}"')
    assert f'* URLFETCH "{url}" {{16}}\r\naGVsbG8gd29ybGQ= "{url}" (BODYPARTSTRUCTURE' in out
    assert '(BODYPARTSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 0' in out
    assert "(BINARY {11}\r\nhello world)" in out
    assert f'"{rump}" NIL' in out
    tampered = url.replace("section=1", "section=2")
    assert f'"{tampered}" NIL' in c(f'u URLFETCH "{tampered}"')
    assert "NO" in c(f'g GENURLAUTH "{rump.replace("alice@", "bob@")}" INTERNAL')
    assert "NO" in c(f'g GENURLAUTH "{rump}" HMAC')
    assert "r OK" in c("r RESETKEY INBOX INTERNAL")
    assert f'"{url}" NIL' in c(f'u URLFETCH "{url}"')


def test_streamed_append_keeps_memory_bounded(tmp_path: Path) -> None:
    """A 20 MB APPEND through a session over the SQLite store: the literal goes into the
    body file as it arrives; the session never holds more than a chunk of it."""
    with SqliteMailStore(tmp_path / "db") as store:
        c = Client(store).login()  # type: ignore[arg-type]
        size = 20 << 20
        line = b"y" * 1022 + b"\n"  # bare LF: converted to CRLF on the way
        header = b"Subject: big\r\n\r\n"
        count = (size - len(header)) // len(line)
        literal = header + line * count
        assert b"+ " in c.send(b"a APPEND INBOX {%d}\r\n" % len(literal))
        chunk = 64 * 1024
        tracemalloc.start()
        try:
            most = 0
            view = memoryview(literal)
            for i in range(0, len(literal), chunk):
                c.session.receive(bytes(view[i : i + chunk]))
                assert c.session.next_job() is None
                most = max(most, c.session.reader.in_memory)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert most <= chunk
        assert peak < 4 * chunk + (256 << 10), peak  # a few chunks, not 20 MB
        out = c.send(b"\r\n")
        assert "a OK [APPENDUID" in out.decode()
        stored = store.mailbox("alice").read("INBOX", 1)
        assert stored == header + line.replace(b"\n", b"\r\n") * count


def test_a_failing_body_write_answers_no_and_the_session_goes_on(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        c = Client(store).login()  # type: ignore[arg-type]
        size = 100 * 1024
        c.send(b"a APPEND INBOX {%d+}\r\n" % size + b"x" * 1000)
        spool = c.session.reader._spool
        assert isinstance(spool, BodySpool)

        def full(data: object) -> None:
            raise OSError(28, "No space left on device")

        spool.writer.write = full  # type: ignore[method-assign]
        out = c.send(b"x" * (size - 1000) + b"\r\n").decode()
        assert "a NO [SERVERBUG]" in out and "No space left" in out
        assert os.listdir(store.mailbox("alice").msgs) == []
        assert "n OK" in c("n NOOP")


def test_relative_urls_and_badurl_text() -> None:
    c = Client().login()
    c.box.append("INBOX", B64_MSG)
    assert "[BADURL ;UID=1]" in c(b'a APPEND INBOX CATENATE (URL ";UID=1")')  # nothing selected
    c.select()
    assert "a OK" in c(b'a APPEND INBOX CATENATE (URL ";UID=1/;SECTION=HEADER" TEXT {4+}\r\nbody)')
    assert c.box.read("INBOX", 2).endswith(b"boundary=x\r\n\r\nbody")
    assert imapurl.badurl("/IN]BOX\u00e9/;uid=1") == "/IN%5DBOX%C3%A9/;uid=1"


def test_a_connection_gone_mid_literal_leaves_no_file(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        c = Client(store).login()  # type: ignore[arg-type]
        c.send(b"a APPEND INBOX {%d+}\r\n" % (200 * 1024) + b"x" * 100_000)
        msgs = store.mailbox("alice").msgs
        assert len(os.listdir(msgs)) == 1  # the body file being written
        c.session.release()  # what the back end does when the connection ends
        assert os.listdir(msgs) == []


NESTED = (
    b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
    b"--o\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n"
    b"Content-Type: text/plain\r\n\r\ninner text\r\n--i--\r\n--o--\r\n"
)


@pytest.mark.parametrize(
    "section",
    [
        "",
        "HEADER",
        "TEXT",
        "1",
        "1.MIME",
        "2",
        "2.MIME",
        "2.HEADER",
        "2.TEXT",
        "2.1",
        "2.1.MIME",
        "1.HEADER",
        "1.TEXT",
    ],
)
def test_section_ranges_cut_what_fetch_section_cuts(section: str) -> None:
    from server.backend.imap.commands.urlauth import section_range
    from server.mail import mime
    from server.protocols.imap import bodystructure

    info = bodystructure.analyze(NESTED)
    cur = Cursor([f"[{section}]".encode()])
    sec = parse_section(cur)
    start, end = section_range(info, sec)  # type: ignore[misc]
    expected = mime.fetch_section(NESTED, info, sec.part, sec.specifier or None)
    assert NESTED[start:end] == expected


def test_catenate_copies_url_parts_from_the_message_file(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        c = Client(store).login()  # type: ignore[arg-type]
        box = store.mailbox("alice")
        box.append("INBOX", NESTED)
        out = c(
            b'a APPEND INBOX CATENATE (URL "/INBOX/;uid=1/;section=2.HEADER" URL'
            b' "/INBOX/;uid=1/;section=2.1/;partial=6.100" URL "/INBOX/;uid=1/;section=2'
            b'.HEADER.FIELDS%20(SUBJECT)")'
        )
        assert "a OK" in out, out
        assert box.read("INBOX", 2) == (
            b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
            b"textSubject: inner\r\n\r\n"
        )
        path = box.body_path("INBOX", 1)
        os.unlink(path)  # expunged behind our back: the URL names nothing now
        assert "[BADURL" in c(b'a APPEND INBOX CATENATE (URL "/INBOX/;uid=1")')


def test_big_multiappend_and_catenate_parts_are_streamed_and_atomic(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as store:
        c = Client(store).login()  # type: ignore[arg-type]
        box = store.mailbox("alice")
        big = b"Subject: big\r\n\r\n" + b"a" * 100_000 + b"\r\n"
        # Two streamed messages, the second one bad: nothing is stored, no file is left.
        out = c.send(
            b"a APPEND INBOX {%d+}\r\n" % len(big)
            + big
            + b" CATENATE (TEXT {%d+}\r\n" % len(big)
            + big
            + b' URL "/INBOX/;uid=9")\r\n'
        )
        assert b"a NO [BADURL" in out
        assert box.status("INBOX").messages == 0 and os.listdir(box.msgs) == []
        assert b"a OK" in c.send(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        out = c.send(
            b"a APPEND INBOX {%d+}\r\n" % len(big)
            + big
            + b" CATENATE (TEXT {%d+}\r\n" % len(big)
            + big
            + b' URL "/INBOX/;uid=1/;section=TEXT")\r\n'
        )
        assert b"a OK [APPENDUID" in out and b" 2:3]" in out, out
        assert box.read("INBOX", 2) == big
        assert box.read("INBOX", 3) == big + b"a" * 100_000 + b"\r\n"
        assert len(os.listdir(box.msgs)) == 3  # the TEXT part's own file is gone
