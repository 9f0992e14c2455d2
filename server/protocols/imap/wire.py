"""IMAP data values on the wire (RFC 3501 section 4) - the one encoder every part shares.

Python values map to IMAP values:
  None -> NIL;  int -> number;  bytes or str -> string (quoted when it can be, else a
  literal);  list/tuple -> parenthesized list;  Atom -> the atom as is;  Raw -> bytes as is
  (already encoded, e.g. a cached ENVELOPE or BODYSTRUCTURE).
"""

from __future__ import annotations

from collections.abc import Iterable


class Atom(str):
    """An atom or flag sent without quotes (\\Seen, OK, INBOX)."""


class Raw(bytes):
    """Bytes that are already in IMAP wire form."""


Value = None | int | bytes | str | list | tuple  # Atom and Raw are str and bytes

# Characters that force a quoted string to become a literal: CR, LF, NUL and 8-bit.
_QUOTED_UNSAFE = frozenset(b"\r\n\x00") | frozenset(range(0x80, 0x100))


def encode_string(data: bytes | str, literal_plus: bool = False) -> bytes:
    """A string as a quoted string when safe, else a literal (server-to-client literals
    are always non-synchronizing, so the `+` marker is never sent by a server)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if _QUOTED_UNSAFE.isdisjoint(data) and len(data) < 1024:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def encode_nstring(data: bytes | str | None) -> bytes:
    return b"NIL" if data is None else encode_string(data)


def encode(value: Value) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, (bytes, str)):
        return encode_string(value)
    if isinstance(value, (list, tuple)):
        return encode_list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as an IMAP value")


def encode_list(values: Iterable[Value]) -> bytes:
    return b"(" + b" ".join(encode(v) for v in values) + b")"
