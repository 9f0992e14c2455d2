"""COMPRESS=DEFLATE (RFC 4978) for a relayed IMAP session, done by the front end.

After the hand-over the front end only relays bytes; compression belongs on the client's
link, so the front end takes the COMPRESS command out of the stream itself. Each direction
is framed into lines (literals skipped by their announced size), which is enough to:

* take "tag COMPRESS DEFLATE" out of what the client sends, and send the back end a NOOP
  with the same tag instead, so the answer comes after the answers to anything the client
  sent before it;
* replace that NOOP's tagged answer with "tag OK DEFLATE active" (sent uncompressed), and
  compress every byte to the client after it; everything the client sends after its
  COMPRESS line is inflated before it reaches the back end (RFC 4978 section 3);
* add COMPRESS=DEFLATE to the back end's CAPABILITY answers, so the capability list does
  not change when the client asks again after login.

A second COMPRESS gets NO [COMPRESSIONACTIVE] the same way. Sans-IO: the relay calls
`from_client` and `from_backend` on each chunk and writes what they return.

Literals are skipped by their announced size. A synchronizing literal from the client is
counted only once the back end has sent its "+" go-ahead: a literal the back end refuses is
never sent, and the client's next command must not be taken for its data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

# The same codec (limits, window, sync flush) as a handed-off session's; CompressError
# is what from_client raises on a broken stream.
from server.protocols.imap.compress import CompressError, Deflate

CAPABILITY = b"COMPRESS=DEFLATE"
#: Longest line kept whole to be looked at; longer ones are relayed as they come (only
#: their end is kept, for the literal marker).
MAX_LINE = 64 * 1024

_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r?\n\Z")
_LITERAL_MARKER = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r?\n")
_MENTIONS_COMPRESS = re.compile(rb"COMPRESS", re.IGNORECASE)
_COMPRESS = re.compile(rb"([^ \r\n]+) COMPRESS DEFLATE\r?\n\Z", re.IGNORECASE)
_CAPABILITY_LINE = re.compile(rb"\* CAPABILITY ([^\r\n]*)(\r?\n)\Z", re.IGNORECASE)


class _Framer:
    """Cuts one direction of an IMAP stream into complete lines and literal data (passed
    through). Lines that `wanted` picks out of a block are handed one by one to `on_line`,
    which returns what to send instead; other blocks of lines go through whole, so a stream
    of short responses costs a few regex scans per chunk rather than a call per line.

    feed() yields the pieces to send, as zero-copy views where it can; afterwards
    `verbatim` says whether they were exactly the chunk fed (the caller may then send the
    chunk itself)."""

    def __init__(
        self,
        on_line: Callable[[bytes], bytes],
        wanted: Callable[[bytes, int, int], bool],
        client: bool = False,
    ) -> None:
        self.on_line = on_line
        self.wanted = wanted
        # The client's side: a synchronizing literal only comes after the server's "+"
        # (see ImapCompress._backend_line); until then its size waits in `awaiting`.
        self.client = client
        self.awaiting = 0
        self.partial = bytearray()
        self.literal = 0
        self.long_line = False
        self.tail = b""
        self.stop = False  # set by on_line: hand back the rest of the chunk unread
        self.rest = b""
        self.verbatim = True

    def feed(self, data: bytes) -> Iterator[bytes | memoryview]:
        self.verbatim = not self.partial
        # Data while a literal still waits for its "+": the server refused the literal,
        # and this is the client's next command.
        self.awaiting = 0
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size:
            if self.literal:
                take = min(self.literal, size - pos)
                yield view[pos : pos + take]
                pos += take
                self.literal -= take
                continue
            if self.partial or self.long_line:
                pos = yield from self._finish_line(data, view, pos)
            else:
                # At a line start: all up to the first literal (or the last full line).
                m = _LITERAL_MARKER.search(data, pos)
                stop_at = m.end() if m is not None else data.rfind(b"\n", pos) + 1
                if stop_at <= pos:
                    pos = yield from self._finish_line(data, view, pos)  # keep the part line
                    continue
                if self.wanted(data, pos, stop_at):
                    for line in data[pos:stop_at].splitlines(keepends=True):
                        new = self.on_line(line)
                        self.verbatim = self.verbatim and new is line
                        yield new
                        pos += len(line)
                        if self.stop:
                            break
                else:
                    yield view[pos:stop_at]
                    pos = stop_at
                if m is not None and pos == m.end():
                    self._literal(m)
            if self.stop:
                self.stop = self.verbatim = False
                self.rest = data[pos:]
                return
        if self.partial:
            self.verbatim = False

    def skim(self, data: bytes) -> bool:
        """Go over a chunk the caller knows holds no line `wanted` would pick, keeping only
        the framing (literals, a line left open at its end): what feed() would do with
        it, without cutting it into pieces. False, with nothing changed, when a line
        began in an earlier chunk or one is left open at its end (feed() holds such a
        line back until it is complete)."""
        if self.partial or self.long_line or self.client:
            return False
        pos, size, literal = 0, len(data), self.literal
        while pos < size:
            if literal:
                take = min(literal, size - pos)
                pos += take
                literal -= take
                continue
            m = _LITERAL_MARKER.search(data, pos)
            if m is None:
                break
            pos, literal = m.end(), int(m.group(1))
        if pos < size and not data.endswith(b"\n"):
            return False
        self.literal = literal
        self.verbatim = True
        return True

    def _finish_line(self, data: bytes, view: memoryview, pos: int) -> Iterator[bytes | memoryview]:
        """Go on with a line begun in an earlier chunk (or begin one that does not end in
        this chunk); returns the new position."""
        lf = data.find(b"\n", pos)
        if lf < 0:
            if self.long_line:
                self.tail = (self.tail + data[-48:])[-48:]
                yield view[pos:]
            else:
                self.partial += view[pos:]
                if len(self.partial) > MAX_LINE:
                    self.long_line, self.verbatim = True, False
                    self.tail = bytes(self.partial[-48:])
                    yield bytes(self.partial)
                    self.partial.clear()
            return len(data)
        if self.long_line:
            self.long_line = False
            end, self.tail = (self.tail + data[max(pos, lf - 47) : lf + 1])[-48:], b""
            yield view[pos : lf + 1]
        else:
            self.partial += view[pos : lf + 1]
            line = bytes(self.partial)
            self.partial.clear()
            end = line[-48:]
            new = self.on_line(line)
            self.verbatim = False  # the line began in an earlier chunk
            yield new
        m = _LITERAL_AT_END.search(end)
        if m is not None:
            self._literal(m)
        return lf + 1

    def _literal(self, m: re.Match[bytes]) -> None:
        if self.client and not m.group(2):
            self.awaiting = int(m.group(1))
        else:
            self.literal = int(m.group(1))


class ImapCompress:
    """The COMPRESS state of one relayed session (see the module docstring)."""

    def __init__(self) -> None:
        self._client = _Framer(self._client_line, self._client_wanted, client=True)
        self._backend = _Framer(self._backend_line, self._backend_wanted)
        self._codec: Deflate | None = None  # from the client's COMPRESS on
        self._deflating = False  # from the byte after our OK on
        self._answers: dict[bytes, bytes] = {}  # tag -> our tagged answer to its NOOP
        self._tags: re.Pattern[bytes] | None = None  # finds those tags' answers
        self._activate = False  # the OK just went out: compress from the next byte on

    @property
    def active(self) -> bool:
        return self._deflating

    # --- client -> back end -----------------------------------------------------------
    def from_client(self, data: bytes) -> bytes:
        if self._codec is not None:
            data = self._codec.inflate(data)
        out = list(self._client.feed(data))
        if self._client.verbatim:
            return data
        while self._client.rest:
            assert self._codec is not None  # rest: what followed the COMPRESS command
            data, self._client.rest = self._codec.inflate(self._client.rest), b""
            out.extend(self._client.feed(data))
        return b"".join(out)

    @staticmethod
    def _client_wanted(data: bytes, start: int, end: int) -> bool:
        return _MENTIONS_COMPRESS.search(data, start, end) is not None

    def _client_line(self, line: bytes) -> bytes:
        m = _COMPRESS.match(line)
        if m is None:
            return line
        tag = m.group(1)
        if self._codec is not None:
            self._expect(tag, tag + b" NO [COMPRESSIONACTIVE] DEFLATE is active already\r\n")
        else:
            self._expect(tag, tag + b" OK DEFLATE active\r\n")
            self._codec = Deflate()
            self._client.stop = True  # what follows the command is compressed
        return tag + b" NOOP\r\n"

    # --- back end -> client -----------------------------------------------------------
    def from_backend(self, data: bytes) -> bytes:
        if (
            not self._deflating
            and not self._activate
            and self._tags is None
            and not self._client.awaiting
            and data.find(b"* CAPABILITY ") < 0
            and self._backend.skim(data)
        ):
            # Nothing to change (the common case: no COMPRESS, no CAPABILITY answer):
            # the chunk goes out as it is, its literals skipped in one pass.
            return data
        plain: list[bytes | memoryview] = []
        packed: list[bytes | memoryview] = []
        for piece in self._backend.feed(data):
            (packed if self._deflating else plain).append(piece)
            if self._activate:
                self._activate, self._deflating = False, True
        if not packed and self._backend.verbatim:
            return data
        return b"".join(plain) + self.compress(b"".join(packed))

    def compress(self, data: bytes) -> bytes:
        """Bytes for the client as they must go on the wire now (also for last words)."""
        if not self._deflating or not data:
            return data
        assert self._codec is not None
        return self._codec.deflate(data)

    def _backend_wanted(self, data: bytes, start: int, end: int) -> bool:
        # The back end writes "* CAPABILITY" in capitals: a plain find, much faster than a
        # case-blind regex over every response.
        if data.find(b"* CAPABILITY ", start, end) >= 0:
            return True
        if self._client.awaiting and (
            data.startswith(b"+", start) or data.find(b"\n+", start, end) >= 0
        ):
            return True
        return self._tags is not None and self._tags.search(data, start, end) is not None

    def _expect(self, tag: bytes, answer: bytes) -> None:
        self._answers[tag] = answer
        self._tags = re.compile(b"(?m)^(?:" + b"|".join(map(re.escape, self._answers)) + b") ")

    def _backend_line(self, line: bytes) -> bytes:
        if line.startswith(b"+") and self._client.awaiting:
            # The go-ahead for the client's synchronizing literal: now it will come.
            self._client.literal, self._client.awaiting = self._client.awaiting, 0
            return line
        if self._answers:
            tag, _, rest = line.partition(b" ")
            answer = self._answers.pop(tag, None)
            if answer is not None:
                if not self._answers:
                    self._tags = None
                if rest[:3].upper() != b"OK ":
                    return line  # the NOOP failed: say so rather than pretend
                if answer.startswith(tag + b" OK"):
                    self._activate = True
                return answer
        m = _CAPABILITY_LINE.match(line)
        if m is not None and CAPABILITY not in m.group(1).upper().split():
            return b"* CAPABILITY " + m.group(1) + b" " + CAPABILITY + m.group(2)
        return line


def with_capability(capabilities: str) -> str:
    """A back end's capability list with COMPRESS=DEFLATE added (the front end's part)."""
    if "COMPRESS=DEFLATE" in capabilities.upper().split():
        return capabilities
    return f"{capabilities} COMPRESS=DEFLATE"


__all__ = ["CAPABILITY", "CompressError", "ImapCompress", "with_capability"]
