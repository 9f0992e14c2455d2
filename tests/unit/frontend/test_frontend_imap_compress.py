"""COMPRESS=DEFLATE (RFC 4978) in the IMAP front end's relay, sans-IO."""

from __future__ import annotations

import zlib
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.frontend.imap_compress import CompressError, ImapCompress, with_capability


class Client:
    """The client's side of the compressed link."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def pack(self, data: bytes) -> bytes:
        return self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.inflate.decompress(data)


def feed(func, data: bytes, bytewise: bool) -> bytes:
    if not bytewise:
        return func(data)
    return b"".join(func(data[i : i + 1]) for i in range(len(data)))


@pytest.mark.parametrize("bytewise", [False, True])
def test_compress_deflate_round_trip(bytewise: bool) -> None:
    state, client = ImapCompress(), Client()
    # Pipelined behind another command, with compressed bytes right behind it.
    sent = b"x SELECT INBOX\r\na COMPRESS DEFLATE\r\n" + client.pack(b"b NOOP\r\n")
    assert feed(state.from_client, sent, bytewise) == b"x SELECT INBOX\r\na NOOP\r\nb NOOP\r\n"
    out = feed(
        state.from_backend,
        b"* 1 EXISTS\r\nx OK [READ-WRITE] done\r\n"
        b"a OK NOOP completed\r\n* 2 EXISTS\r\nb OK NOOP completed\r\n",
        bytewise,
    )
    head = b"* 1 EXISTS\r\nx OK [READ-WRITE] done\r\na OK DEFLATE active\r\n"
    assert out.startswith(head) and state.active
    assert client.unpack(out[len(head) :]) == b"* 2 EXISTS\r\nb OK NOOP completed\r\n"
    # A second COMPRESS: NO [COMPRESSIONACTIVE], compressed like everything now.
    assert state.from_client(client.pack(b"c COMPRESS DEFLATE\r\n")) == b"c NOOP\r\n"
    out = client.unpack(state.from_backend(b"c OK NOOP completed\r\n"))
    assert out == b"c NO [COMPRESSIONACTIVE] DEFLATE is active already\r\n"
    assert client.unpack(state.compress(b"* BYE lost\r\n")) == b"* BYE lost\r\n"


@pytest.mark.parametrize("bytewise", [False, True])
def test_literals_are_not_taken_for_commands(bytewise: bool) -> None:
    state = ImapCompress()
    message = b"a COMPRESS DEFLATE\r\n"
    sent = b"x APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n"
    assert feed(state.from_client, sent, bytewise) == sent
    answer = b"* 1 FETCH (BODY[] {22}\r\n* CAPABILITY IMAP4rev1)\r\n"
    assert feed(state.from_backend, answer, bytewise) == answer
    assert not state.active


def test_capability_answers_gain_compress() -> None:
    state = ImapCompress()
    out = state.from_backend(b"* CAPABILITY IMAP4rev1 IDLE\r\nt OK done\r\n")
    assert out == b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE\r\nt OK done\r\n"
    assert with_capability("IMAP4rev1 IDLE") == "IMAP4rev1 IDLE COMPRESS=DEFLATE"
    assert with_capability("IMAP4rev1 COMPRESS=DEFLATE") == "IMAP4rev1 COMPRESS=DEFLATE"


def test_other_mechanisms_go_to_the_back_end() -> None:
    state = ImapCompress()
    assert state.from_client(b"a COMPRESS LZW\r\n") == b"a COMPRESS LZW\r\n"


def test_broken_or_exploding_deflate_ends_the_session() -> None:
    state = ImapCompress()
    state.from_client(b"a COMPRESS DEFLATE\r\n")
    with pytest.raises(CompressError):
        state.from_client(b"\xff\xff\xff garbage")
    state, client = ImapCompress(), Client()
    state.from_client(b"a COMPRESS DEFLATE\r\n")
    bomb = client.pack(b"\0" * (40 * 1024 * 1024))
    with pytest.raises(CompressError):
        state.from_client(bomb)


def test_synchronizing_literal_counts_only_after_the_go_ahead() -> None:
    """The client sends a {n} literal only after the server's "+": if the back end refuses
    it instead, the client's next line is a command, not literal data."""
    state = ImapCompress()
    assert state.from_client(b"a APPEND INBOX {20}\r\n") == b"a APPEND INBOX {20}\r\n"
    assert state.from_backend(b"+ Ready\r\n") == b"+ Ready\r\n"
    literal = b"b COMPRESS DEFLATE\r\n"  # 20 octets of message, not a command
    assert state.from_client(literal + b"\r\n") == literal + b"\r\n"
    assert not state.active
    state.from_client(b"c APPEND INBOX {99999999}\r\n")
    state.from_backend(b"c NO [TOOBIG] Literal too large\r\n")
    assert state.from_client(b"d COMPRESS DEFLATE\r\n") == b"d NOOP\r\n"


STREAM = (
    b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM)] {17}\r\nFrom: a\r\nb OK x\r\n\r\n)\r\n"
    b"* CAPABILITY IMAP4rev1 IDLE\r\n"
    b"* 2 FETCH (BODY[] {26}\r\n* CAPABILITY IMAP4rev1\r\n{3}\r\n)\r\nf OK done\r\n"
    b"* 3 FETCH (BODY[] {0}\r\n)\r\n* CAPABILITY X\r\n"
)


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_chunks_skimmed_or_framed_come_out_alike(cuts: list[int]) -> None:
    """The fast path (skim) frames the back end's stream exactly as feed() does: the same
    bytes out, wherever the chunks are cut, CAPABILITY lines rewritten, literals kept."""
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in pairwise(points)]
    fast, slow = ImapCompress(), ImapCompress()
    slow._backend.skim = lambda data: False  # type: ignore[method-assign]
    assert [fast.from_backend(c) for c in chunks] == [slow.from_backend(c) for c in chunks]
    out = b"".join(fast.from_backend(c) for c in [b"* CAPABILITY Y\r\n"])
    assert out == b"* CAPABILITY Y COMPRESS=DEFLATE\r\n"
