"""COMPRESS (RFC 4978) in the back-end session: offered and done only on a direct
connection (a handed-off plaintext client), refused on a relayed one, whose front end
does it."""

from __future__ import annotations

import zlib

from server.protocols.imap.compress import MAX_INFLATE
from tests.unit.backend.imap.test_imap_session import Client


class Packer:
    """The client's side of the compressed stream."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)

    def __call__(self, data: bytes) -> bytes:
        return self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


def direct() -> Client:
    c = Client().login()
    c.session.direct = True
    return c


def test_a_relayed_session_neither_offers_nor_does_compress() -> None:
    c = Client().login()
    out = c("c CAPABILITY")
    assert "* CAPABILITY " in out and "COMPRESS" not in out
    assert c("d COMPRESS DEFLATE").startswith("d BAD ")
    assert c.session.compression is None
    assert "e OK" in c("e NOOP")  # still in the clear


def test_a_direct_session_offers_compress_deflate() -> None:
    out = direct()("c CAPABILITY")
    (line,) = [x for x in out.splitlines() if x.startswith("* CAPABILITY ")]
    assert "COMPRESS=DEFLATE" in line.split()


def test_compress_answers_ok_and_inflates_what_was_pipelined_behind_it() -> None:
    c, pack = direct(), Packer()
    out = c.send(b"d COMPRESS DEFLATE\r\n" + pack(b"e SELECT INBOX\r\nf NOOP\r\n"))
    # The session's answers are in the clear here: the I/O layer deflates all it writes
    # after the OK (server.backend.imap.server, DeflatingWriter).
    ok, rest = out.split(b"\r\n", 1)
    assert ok == b"d OK DEFLATE active"
    assert b"e OK [READ-WRITE]" in rest and rest.endswith(b"f OK NOOP completed\r\n")
    assert c.session.compression is not None
    # A command split over reads, still compressed.
    assert c.send(pack(b"g NO")) == b""
    assert c.send(pack(b"OP\r\n")) == b"g OK NOOP completed\r\n"


def test_a_second_compress_is_refused_with_compressionactive() -> None:
    c, pack = direct(), Packer()
    assert c("d COMPRESS DEFLATE") == "d OK DEFLATE active\r\n"
    out = c.send(pack(b"e COMPRESS DEFLATE\r\n"))
    assert out.startswith(b"e NO [COMPRESSIONACTIVE] ")


def test_an_unknown_mechanism_is_bad_and_changes_nothing() -> None:
    c = direct()
    assert c("d COMPRESS LZW").startswith("d BAD Unknown compression mechanism")
    assert c.session.compression is None
    assert c("e NOOP") == "e OK NOOP completed\r\n"


def test_compress_before_login_is_refused() -> None:
    c = Client()
    c.session.direct = True
    assert c("a COMPRESS DEFLATE").startswith("a BAD ")
    assert c.session.compression is None


def test_broken_compressed_data_ends_the_session_with_bye() -> None:
    c, pack = direct(), Packer()
    c("d COMPRESS DEFLATE")
    assert c.send(pack(b"e NOOP\r\n")) == b"e OK NOOP completed\r\n"
    out = c.send(b"\xff\xfe\xfd not deflate")
    assert out.startswith(b"* BYE bad DEFLATE data from the client")
    assert c.session.closed
    assert c.send(pack(b"f NOOP\r\n")) == b""


def test_a_decompression_bomb_ends_the_session() -> None:
    c = direct()
    c("d COMPRESS DEFLATE")
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.send(bomb.compress(b"\0" * (MAX_INFLATE + 1)) + bomb.flush(zlib.Z_SYNC_FLUSH))
    assert out.startswith(b"* BYE the client's DEFLATE data inflates too far")
    assert c.session.closed
