"""The header checks of submission: the header block must be plain RFC 5322 (section 2.2,
3.6.8), and the From addresses are read the way every reader of the stored message reads them.

A header block that two parsers read differently is how SendAs was bypassed: `From : bob@..`
(white space before the colon, RFC 5322 section 4.5.3's obsolete syntax) is no field for the
email package but is the From for the store's ENVELOPE, and a line that is not a field ends
the header for the email package but not for the store. Such headers are refused, and the
SendAs check takes the From addresses of both parsers, so neither can name someone else.
"""

from __future__ import annotations

import email.policy
import re
from email.errors import HeaderParseError
from email.parser import BytesHeaderParser

from server.mail.mime import from_addresses

# field-name = 1*ftext, ftext = %d33-57 / %d59-126, then the colon (RFC 5322 section 3.6.8)
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
MAX_HEADER_LINE = 998  # RFC 5322 section 2.1.1


class HeaderError(ValueError):
    """The message's header cannot be accepted; str() says why, for the SMTP reply."""


def header_block(raw: bytes) -> bytes:
    """The top-level header (without the blank line that ends it)."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    return raw[: match.start()] if match else raw


def check_header(raw: bytes) -> None:
    """HeaderError when the top-level header is not a plain RFC 5322 header block."""
    for number, line in enumerate(re.split(rb"\r?\n", header_block(raw)), 1):
        if len(line) > MAX_HEADER_LINE:
            raise HeaderError(f"header line {number} is longer than {MAX_HEADER_LINE} characters")
        if b"\r" in line or b"\0" in line:
            raise HeaderError(f"header line {number} has a bare CR or NUL")
        if line[:1] in (b" ", b"\t"):
            if number == 1:
                raise HeaderError("the header starts with a continuation line")
            continue
        if not _FIELD.match(line):
            if re.match(rb"[\x21-\x39\x3b-\x7e]+[ \t]+:", line):
                raise HeaderError(f"header line {number} has white space before the colon")
            raise HeaderError(f"header line {number} is not a header field")


def sender_addresses(raw: bytes) -> list[str]:
    """Every From address (lower case) as the email package (policy.default) and the
    store's ENVELOPE read it; HeaderError when a From field cannot be parsed."""
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    found: list[str] = []
    try:
        fields = parsed.get_all("From", [])
        for field in fields:
            addresses = getattr(field, "addresses", ())
            if getattr(field, "defects", ()) or not addresses:
                raise HeaderError("the From field cannot be parsed")
            found.extend(a.addr_spec.lower() for a in addresses)
    except (HeaderParseError, ValueError, IndexError) as exc:
        if isinstance(exc, HeaderError):
            raise
        raise HeaderError("the From field cannot be parsed") from None
    found.extend(a.lower() for a in from_addresses(raw))
    return list(dict.fromkeys(found))
