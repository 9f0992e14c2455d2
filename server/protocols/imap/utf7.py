"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII other than "&" stands for itself, "&" is "&-", and every other run of
characters is UTF-16BE in base64 with "," for "/", no padding, between "&" and "-".
"""

from __future__ import annotations

import base64
import binascii


def _b64(chars: str) -> str:
    data = chars.encode("utf-16-be")
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """Unicode mailbox name -> modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if " " <= ch <= "~":
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def _decode_run(run: str) -> str:
    if not run or len(run) % 4 == 1:
        raise ValueError("malformed modified UTF-7 shift sequence")
    try:
        data = base64.b64decode(run.replace(",", "/") + "=" * (-len(run) % 4), validate=True)
        return data.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("malformed modified UTF-7 shift sequence") from exc


def decode(name: str | bytes) -> str:
    """Modified UTF-7 -> Unicode. Strict: raises ValueError for 8-bit or control bytes, an
    unterminated or malformed "&...-" run, and any non-canonical form (base64 for a
    printable ASCII character, non-zero padding bits, two runs back to back)."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError("8-bit character in modified UTF-7") from exc
    if "&" not in name:
        if not all(" " <= ch <= "~" for ch in name):
            raise ValueError("invalid character in modified UTF-7")
        return name
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if ch != "&":
            if not " " <= ch <= "~":
                raise ValueError("invalid character in modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift sequence")
        out.append("&" if end == i + 1 else _decode_run(name[i + 1 : end]))
        i = end + 1
    result = "".join(out)
    # Canonical-form check catches every "MUST NOT" of RFC 3501 5.1.3 in one comparison.
    if encode(result) != name:
        raise ValueError("non-canonical modified UTF-7")
    return result
