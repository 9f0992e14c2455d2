"""BINARY (RFC 3516): content transfer decoding of message parts, and the reverse for
APPEND of binary data that a plain literal could not carry.

decode_part() gives what BINARY[section] returns: the part's body with its
Content-Transfer-Encoding undone (base64, quoted-printable; 7bit, 8bit and binary as
they are), or None for an encoding this server cannot decode (answered [UNKNOWN-CTE],
RFC 3516 section 4.2). encode_nul_parts() turns the leaf parts of a message that hold
NUL octets (which no IMAP literal may carry, RFC 3501 section 4.3) into base64 parts, so
BODY[] stays a valid literal while BINARY[] gives the octets back unchanged.
"""

from __future__ import annotations

import base64
import binascii
import re

from server.mail import mime
from server.protocols.imap import bodystructure

#: Encodings served as they are stored (RFC 2045 section 6.2: identity encodings).
IDENTITY = frozenset({"", "7bit", "8bit", "binary"})

#: Every encoding decode_body() undoes.
DECODABLE = IDENTITY | {"base64", "quoted-printable"}

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_base64(data: bytes) -> bytes:
    """Lenient base64 (RFC 2045 section 6.8): characters outside the alphabet are
    ignored, decoding stops at the padding, a dangling last character is dropped."""
    data = _NOT_BASE64.sub(b"", data)
    end = data.find(b"=")
    if end >= 0:
        data = data[:end]
    extra = len(data) % 4
    if extra == 1:
        data = data[:-1]
    elif extra:
        data += b"=" * (4 - extra)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def _unescape(m: re.Match[bytes]) -> bytes:
    return bytes((int(m.group(1), 16),))


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 section 6.7): trailing white space of a line is
    transport padding and goes; a line ending in "=" (soft break) joins the next; a hard
    line break becomes CRLF; "=" not followed by two hex digits stays as it is."""
    out = bytearray()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r").rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out += _QP_ESCAPE.sub(_unescape, line) if b"=" in line else line
        if i < last and not soft:
            out += b"\r\n"
    return bytes(out)


def decode_body(data: bytes, cte: str) -> bytes | None:
    """A body with its transfer encoding undone; None when `cte` is unknown."""
    cte = cte.lower()
    if cte in IDENTITY:
        return data
    if cte == "base64":
        return decode_base64(data)
    if cte == "quoted-printable":
        return decode_qp(data)
    return None


def decode_part(raw: bytes, root: mime.Part, section: tuple[int, ...]) -> bytes | None:
    """BINARY[section] (before <partial>): the whole message for [], a part's body with
    its encoding undone for a leaf part, the body as stored for a multipart or
    message/rfc822 part (nothing to decode at that level), b"" for a part that does not
    exist, None for an unknown encoding."""
    if not section:
        return raw
    part = mime.find_part(root, section)
    if part is None:
        return b""
    body = raw[part.body : part.end]
    if part.kind != mime.LEAF:
        return body
    return decode_body(body, part.cte)


def literal(data: bytes) -> bytes:
    """A literal for BINARY data: literal8 (~{n}) when it holds NUL, which a plain
    literal may not (RFC 3516 section 4.2)."""
    return (b"~{%d}\r\n" if b"\x00" in data else b"{%d}\r\n") % len(data) + data


_CTE_FIELD = re.compile(
    rb"^content-transfer-encoding[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n?", re.IGNORECASE | re.MULTILINE
)


_MIME_FIELD = re.compile(rb"^(?:mime-version|content-type)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def encode_nul_parts(raw: bytes) -> bytes:
    """The message with every leaf part whose body holds NUL re-encoded as base64 (its
    Content-Transfer-Encoding field replaced); other bytes stay as they are. For APPEND
    of literal8 data (RFC 3516 section 4.4): BINARY[part] then gives the same octets."""
    if b"\x00" not in raw:
        return raw
    root = bodystructure.analyze(raw).part_map
    leaves: list[mime.Part] = []

    def walk(part: mime.Part) -> None:
        if part.kind == mime.LEAF:
            if b"\x00" in raw[part.body : part.end]:
                leaves.append(part)
        else:
            for child in part.children:
                walk(child)

    walk(root)
    out = bytearray()
    pos = 0
    for part in sorted(leaves, key=lambda p: p.start):
        body = raw[part.body : part.end]
        decoded = decode_body(body, part.cte)
        if decoded is None:
            decoded = body
        header = raw[part.start : part.body]
        lines = header.splitlines(keepends=True)
        # The header block ends with its blank line; the new field goes before it.
        blank = lines.pop() if lines and lines[-1].strip() == b"" else b"\r\n"
        kept = _CTE_FIELD.sub(b"", b"".join(lines))
        if kept and not kept.endswith(b"\n"):
            kept += b"\r\n"
        if part is root and not _MIME_FIELD.search(kept):
            # Content-* fields count only in a MIME message (RFC 2045 section 4).
            kept += b"MIME-Version: 1.0\r\n"
        encoded = base64.encodebytes(decoded).replace(b"\n", b"\r\n")
        out += raw[pos : part.start]
        out += kept + b"Content-Transfer-Encoding: base64\r\n" + blank + encoded
        pos = part.end
    out += raw[pos:]
    return bytes(out)
