"""COMPRESS=DEFLATE (RFC 4978): the server's two streams of one connection (sans-IO).

Raw DEFLATE (RFC 1951) both ways. What the server sends is sync-flushed at the end of each
piece, so the client can act on every response it was sent; what the client sends is
inflated chunk by chunk, with a bound on how far one chunk may grow.
"""

from __future__ import annotations

import zlib

#: Most bytes one received chunk may inflate to; more is a decompression bomb, not mail.
MAX_INFLATE = 16 * 1024 * 1024
#: The compressor's window (2**13 bytes) and memLevel: about 64 KB per connection instead
#: of zlib's default 256 KB, and any inflater (window 15) reads the stream all the same.
DEFLATE_WINDOW_BITS = -13
DEFLATE_MEM_LEVEL = 6


class CompressError(Exception):
    """The client's compressed stream is broken or inflates too far: end the session."""


class Deflate:
    """One connection's DEFLATE state, made when COMPRESS is accepted (never before: an
    uncompressed connection holds no zlib state)."""

    __slots__ = ("_inflate", "_deflate")

    def __init__(self) -> None:
        # The client may use any window up to 32 KB: the inflater takes the largest.
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, DEFLATE_WINDOW_BITS, DEFLATE_MEM_LEVEL
        )

    def inflate(self, data: bytes) -> bytes:
        """The client's bytes in the clear (b"" until a block is complete)."""
        try:
            out = self._inflate.decompress(data, MAX_INFLATE)
        except zlib.error as exc:
            raise CompressError(f"bad DEFLATE data from the client: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise CompressError("the client's DEFLATE data inflates too far")
        return out

    def deflate(self, data: bytes) -> bytes:
        """`data` as it must go on the wire now: compressed and sync-flushed."""
        return self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


__all__ = ["MAX_INFLATE", "CompressError", "Deflate"]
