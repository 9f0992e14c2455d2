"""COMPRESS (RFC 4978): the command's grammar and the DEFLATE codec of one connection."""

from __future__ import annotations

import random
import zlib

import pytest

from server.protocols.imap.compress import MAX_INFLATE, CompressError, Deflate
from server.protocols.imap.reader import parse_line
from server.protocols.imap.requests import Command, Compress, ParseError


@pytest.mark.parametrize("line", [b"a COMPRESS DEFLATE", b"a compress deflate"])
def test_compress_names_its_mechanism_upper_case(line: bytes) -> None:
    event = parse_line(line)
    assert isinstance(event, Command) and event.name == "COMPRESS"
    assert event.args == Compress("DEFLATE")


def test_an_unknown_mechanism_is_well_formed_for_the_session_to_refuse() -> None:
    event = parse_line(b"a COMPRESS LZW")
    assert isinstance(event, Command) and event.args == Compress("LZW")


@pytest.mark.parametrize(
    "line", [b"a COMPRESS", b"a COMPRESS ", b'a COMPRESS "DEFLATE"', b"a COMPRESS DEFLATE X"]
)
def test_malformed_compress_is_a_parse_error(line: bytes) -> None:
    event = parse_line(line)
    assert isinstance(event, ParseError) and event.tag == "a"


def test_deflate_round_trips_with_a_sync_flush_per_write() -> None:
    ours = Deflate()
    inflate = zlib.decompressobj(-15)
    for piece in (b"* 1 EXISTS\r\n", b"a OK done\r\n" * 50):
        wire = ours.deflate(piece)
        # Each write can be read whole at once: the client acts on every response.
        assert wire.endswith(b"\x00\x00\xff\xff") and inflate.decompress(wire) == piece
    client = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    sent = client.compress(b"b NOOP\r\n") + client.flush(zlib.Z_SYNC_FLUSH)
    assert ours.inflate(sent[:3]) + ours.inflate(sent[3:]) == b"b NOOP\r\n"


def test_the_compressor_window_is_8_kb() -> None:
    """Memory per connection: a repeat 10 KB back is out of reach (zlib's default window
    of 32 KB would find it), and any inflater reads the stream."""
    rng = random.Random(1)
    first, between = rng.randbytes(6000), rng.randbytes(4000)
    data = first + between + first
    wire = Deflate().deflate(data)
    assert len(wire) > len(data) - 100
    default = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    assert len(default.compress(data) + default.flush()) < len(first + between) + 500
    assert zlib.decompressobj(-15).decompress(wire) == data


def test_broken_deflate_data_is_an_error() -> None:
    with pytest.raises(CompressError, match="bad DEFLATE data"):
        Deflate().inflate(b"\xff\xfe\xfd not deflate at all")


def test_a_decompression_bomb_is_refused() -> None:
    client = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = client.compress(b"\0" * (MAX_INFLATE + 1)) + client.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 64 * 1024
    with pytest.raises(CompressError, match="inflates too far"):
        Deflate().inflate(bomb)
