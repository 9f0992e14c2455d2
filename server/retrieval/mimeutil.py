"""What the rendering steps share: parsing, text extraction, and putting a rebuilt MIME entity
back under the message's original header fields.

The top-level header block is kept byte for byte (minus the Content-* fields and
MIME-Version, which describe the old body): From, Subject, Date, Message-ID, Received and
the rest reach the client exactly as stored, so ENVELOPE and threading do not change.
"""

from __future__ import annotations

import hashlib
import re
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from io import BytesIO

# Parts we create: 7-bit transfer encodings (quoted-printable/base64), so every client copes.
NEW_PART_POLICY = policy.default.clone(cte_type="7bit", linesep="\r\n")
# Whole-message output: CRLF, and 8-bit parts of the original written back untouched.
OUTPUT_POLICY = policy.SMTP.clone(cte_type="8bit", refold_source="none")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^(?=[^ \t\r\n])", re.M)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FIRST_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:|From ")  # or an mbox "From " line


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(raw: bytes) -> bytes | None:
    """The top-level header block (without the blank line), or None when the message does
    not start with a header field or has no body separator (nothing we could convert)."""
    if not _FIRST_FIELD.match(raw):
        return None
    m = _HEADER_END.search(raw)
    return None if m is None else raw[: m.start()]


def kept_fields(raw: bytes) -> bytes:
    """The original header fields minus Content-* and MIME-Version, CRLF-terminated."""
    block = header_block(raw) or b""
    fields = [f for f in _FIELD_START.split(block) if f.strip()]
    kept = [
        f
        for f in fields
        if not f.lower().startswith((b"content-", b"mime-version:", b"mime-version "))
    ]
    out = b"".join(f if f.endswith(b"\n") else f + b"\n" for f in kept)
    return crlf(out)


def crlf(data: bytes) -> bytes:
    return _BARE_LF.sub(b"\r\n", data) if b"\n" in data else data


def entity_bytes(entity: MIMEPart) -> bytes:
    # Parts parsed or made with the email.policy.default family are EmailMessages (its
    # message_factory); the stubs only promise MIMEPart for the parts of a message.
    assert isinstance(entity, EmailMessage)
    out = BytesIO()
    BytesGenerator(out, policy=OUTPUT_POLICY, mangle_from_=False).flatten(entity)
    return out.getvalue()


def assemble(raw: bytes, entity: MIMEPart) -> bytes:
    """The original header fields on top of a rebuilt body entity (its Content-* fields,
    MIME-Version, blank line and body)."""
    if "MIME-Version" not in entity:
        entity["MIME-Version"] = "1.0"
    set_boundaries(raw, entity)
    return kept_fields(raw) + crlf(entity_bytes(entity))


def set_boundaries(raw: bytes, entity: MIMEPart) -> None:
    """Give every multipart we built a boundary derived from the stored message, where the
    generator would pick a random one. A rendering must be the same bytes every time: a
    client fetching a message in pieces (BODY[]<partial>, a POP3 TOP then RETR) across a
    cache eviction, a restart, or from the IMAP and the POP3 back end (two processes)
    would otherwise put together pieces of different messages."""
    multiparts = [
        p
        for p in entity.walk()
        if p.get_content_maintype() == "multipart" and p.get_boundary() is None
    ]
    if not multiparts:
        return
    texts = [raw] + [
        p.get_payload().encode("utf-8", "surrogateescape")  # type: ignore[union-attr]
        for p in entity.walk()
        if not p.is_multipart() and isinstance(p.get_payload(), str)
    ]
    seed = hashlib.sha256(raw).digest()
    counter = 0
    for part in multiparts:
        while True:
            counter += 1
            token = hashlib.sha256(seed + counter.to_bytes(4, "big")).hexdigest()[:32]
            boundary = "=_" + token
            if not any(boundary.encode() in text for text in texts):
                break
        part.set_boundary(boundary)


def strip_to_entity(msg: MIMEPart) -> MIMEPart:
    """Drop the non-MIME fields from a parsed message, leaving the body entity."""
    for name in {k.lower() for k in msg.keys()}:
        if not name.startswith("content-") and name != "mime-version":
            del msg[name]
    return msg


def text_part(text: str, subtype: str) -> EmailMessage:
    part = EmailMessage(policy=NEW_PART_POLICY)
    part.set_content(_crlf_text(text), subtype=subtype, charset="utf-8")
    return part


def _crlf_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_of(part: MIMEPart) -> str:
    """The decoded text of a text/* part; unknown or wrong charsets never fail (the
    bytes are decoded as UTF-8 with replacement, else Latin-1)."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return _crlf_text(content)
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return _crlf_text(data.decode(charset))
    except (LookupError, UnicodeError):
        return _crlf_text(data.decode("utf-8", "replace"))


def is_attachment(part: MIMEPart) -> bool:
    return part.get_content_disposition() == "attachment"
