"""server.store.mime over the real-world corpus, checked for internal consistency and
against Dovecot's answers recorded in tests/data/mime/dovecot_expected.json
(re-record with tests/data/mime/record_dovecot.py)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

CORPUS = Path("/work/shared/corpus/cpython-email")
DATA = Path(__file__).resolve().parent.parent / "data" / "mime"
EXPECTED = DATA / "dovecot_expected.json"


# --- a tiny IMAP value parser, for tests only ------------------------------------------

_ATOM_END = b" ()\r\n"


def parse_value(data: bytes, pos: int = 0) -> tuple[object, int]:
    """One IMAP value at data[pos:] -> (value, next position).

    NIL -> None, number -> int, string/literal -> bytes, list -> list, other atoms
    (including FETCH item names like BODY[1.MIME]) -> str."""
    c = data[pos : pos + 1]
    if c == b"(":
        items: list[object] = []
        pos += 1
        while True:
            while data[pos : pos + 1] == b" ":
                pos += 1
            if data[pos : pos + 1] == b")":
                return items, pos + 1
            if pos >= len(data):
                raise ValueError("unbalanced list")
            value, pos = parse_value(data, pos)
            items.append(value)
    if c == b'"':
        out = bytearray()
        pos += 1
        while True:
            ch = data[pos : pos + 1]
            if not ch or ch in b"\r\n":
                raise ValueError("unterminated quoted string")
            if ch == b"\\":
                out += data[pos + 1 : pos + 2]
                pos += 2
                continue
            if ch == b'"':
                return bytes(out), pos + 1
            out += ch
            pos += 1
    if c == b"{":
        m = re.compile(rb"\{(\d+)\+?\}\r\n").match(data, pos)
        if not m:
            raise ValueError("bad literal header")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(data):
            raise ValueError("short literal")
        return data[start : start + n], start + n
    end = pos
    depth = 0
    while end < len(data):
        ch = data[end : end + 1]
        if ch == b"[":
            depth += 1
        elif ch == b"]":
            depth -= 1
        elif depth == 0 and ch in _ATOM_END:
            break
        end += 1
    if end == pos:
        raise ValueError(f"unexpected {data[pos:pos + 10]!r}")
    atom = data[pos:end].decode("latin-1")
    if atom.upper() == "NIL":
        return None, end
    if atom.isdigit():
        return int(atom), end
    return atom, end


def parse_whole(data: bytes) -> object:
    value, pos = parse_value(data, 0)
    if pos != len(data):
        raise ValueError(f"trailing bytes after value: {data[pos:]!r}")
    return value


def to_json(value: object) -> object:
    """IMAP values -> JSON (bytes become latin-1 text, so nothing is lost)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def crlf(raw: bytes) -> bytes:
    """What the store does at delivery: every line ends in CRLF."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


def corpus_messages() -> list[tuple[str, bytes]]:
    if not CORPUS.is_dir():
        return []
    return [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("msg_*.txt"))]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + f":{len(data)}"
