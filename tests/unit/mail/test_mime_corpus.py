"""server.mail.mime over the real-world corpus, checked for internal consistency and
against Dovecot's answers recorded in tests/data/mime/dovecot_expected.json
(re-record with tests/data/mime/record_dovecot.py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from server.mail import mime
from server.protocols.imap import bodystructure
from tests.conftest import corpus_paths

DATA = Path(__file__).resolve().parents[2] / "data" / "mime"
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
        raise ValueError(f"unexpected {data[pos : pos + 10]!r}")
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
    return [(p.name, p.read_bytes()) for p in corpus_paths()]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + f":{len(data)}"


def _all_messages() -> list[tuple[str, bytes]]:
    """Corpus (as the store keeps it: CRLF) plus the hand-written messages."""
    out = [(name, crlf(raw)) for name, raw in corpus_messages()]
    return out + [(p.name, p.read_bytes()) for p in sorted(DATA.glob("*.eml"))]


MESSAGES = _all_messages()
IDS = [name for name, _ in MESSAGES]


def _walk(part: mime.Part, path: tuple[int, ...] = ()):
    """(section path, node) for every addressable part, as IMAP numbers them."""
    if part.kind == mime.MULTIPART:
        for i, child in enumerate(part.children, 1):
            yield path + (i,), child
            yield from _walk_inner(child, path + (i,))
    else:
        yield path + (1,), part
        yield from _walk_inner(part, path + (1,))


def _walk_inner(part: mime.Part, path: tuple[int, ...]):
    if part.kind == mime.MULTIPART:
        yield from _walk(part, path)
    elif part.kind == mime.MESSAGE:
        yield from _walk(part.children[0], path)


def _check_ranges(part: mime.Part, lo: int, hi: int) -> None:
    assert lo <= part.start <= part.body <= part.end <= hi
    prev = part.body
    for child in part.children:
        assert child.start >= prev, "children overlap or go backwards"
        _check_ranges(child, part.body, part.end)
        prev = child.end
    if part.kind == mime.MESSAGE:
        assert len(part.children) == 1
        assert part.children[0].start == part.body


def test_corpus_is_there() -> None:
    assert len(corpus_messages()) >= 30


@pytest.mark.parametrize(("name", "raw"), MESSAGES, ids=IDS)
def test_analyze_is_consistent(name: str, raw: bytes) -> None:
    info = bodystructure.analyze(raw)
    for wire_value in (info.envelope, info.body, info.bodystructure):
        value = parse_whole(wire_value)  # balanced, well-formed IMAP
        assert isinstance(value, list)
    assert len(parse_whole(info.envelope)) == 10
    assert info.size == len(raw)
    root = info.part_map
    assert (root.start, root.end, root.body) == (0, len(raw), info.header_len)
    _check_ranges(root, 0, len(raw))

    header = mime.fetch_section(raw, info, (), "HEADER")
    text = mime.fetch_section(raw, info, (), "TEXT")
    assert header + text == raw == mime.fetch_section(raw, info, ())
    for path, _node in _walk(root):
        for spec in (None, "MIME", "HEADER", "TEXT"):
            got = mime.fetch_section(raw, info, path, spec)
            assert got in raw, (path, spec)
        part = mime.fetch_section(raw, info, path)
        mime_hdr = mime.fetch_section(raw, info, path, "MIME")
        if len(path) > 1 or root.kind == mime.MULTIPART:
            assert mime_hdr + part in raw  # a part's MIME header is followed by its body

    again = bodystructure.MessageInfo.from_json(info.to_json())
    assert again == info
    json.loads(info.to_json())


def test_bare_lf_messages_work_too() -> None:
    """The store normalises to CRLF, but a bare-LF message must not break anything."""
    for _name, raw in corpus_messages():
        info = bodystructure.analyze(raw)
        parse_whole(info.bodystructure)
        parse_whole(info.envelope)
        assert (
            mime.fetch_section(raw, info, (), "HEADER") + mime.fetch_section(raw, info, (), "TEXT")
            == raw
        )


# --- Dovecot cross-check -------------------------------------------------------------------

# Where we knowingly answer differently from Dovecot 2.3.19, and why:
# HEADER.FIELDS[.NOT] always ends with the blank line (RFC 3501 section 6.4.5, "the
# subset of the header ... including the blank line"); Dovecot leaves it out in some
# malformed headers (a header with no blank line, or a field line without a colon).
KNOWN_DIFFERENCES = {
    ("11_no_separator.eml", "HEADER.FIELDS.NOT (FROM SUBJECT CONTENT-TYPE)"),
    ("hand_05_noblank.eml", "HEADER.FIELDS.NOT (FROM SUBJECT CONTENT-TYPE)"),
    ("hand_13_cut_header.eml", "2.HEADER.FIELDS (FROM)"),
}


def _expected() -> list[dict]:
    return json.loads(EXPECTED.read_text())["messages"]


def _split_section(section: str) -> tuple[tuple[int, ...], str | None, list[str] | None]:
    fields = None
    if " (" in section:
        section, names = section.split(" (", 1)
        fields = names.rstrip(")").split()
    tokens = section.split(".") if section else []
    nums = []
    while tokens and tokens[0].isdigit():
        nums.append(int(tokens.pop(0)))
    return tuple(nums), ".".join(tokens) or None, fields


def test_dovecot_answers_cover_all_messages() -> None:
    names = {m["name"] for m in _expected()}
    assert names == set(IDS)


@pytest.mark.parametrize("expected", _expected(), ids=lambda m: m["name"])
def test_matches_dovecot(expected: dict) -> None:
    raw = dict(MESSAGES)[expected["name"]]
    info = bodystructure.analyze(raw)
    assert info.size == expected["size"]
    assert to_json(parse_whole(info.envelope)) == expected["envelope"]
    assert to_json(parse_whole(info.body)) == expected["body"]
    assert to_json(parse_whole(info.bodystructure)) == expected["bodystructure"]
    for section, want in expected["sections"].items():
        if (expected["name"], section) in KNOWN_DIFFERENCES:
            continue
        path, spec, fields = _split_section(section)
        got = mime.nul_safe(mime.fetch_section(raw, info, path, spec, fields))
        assert digest(got) == want, section
