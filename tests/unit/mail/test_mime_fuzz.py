"""Bounded fuzzing of the MIME parser (server/mail/mime.py): random part trees, nested
far deeper than any mail client goes, with broken and overlapping boundaries, never make
the parser itself raise, and everything built on its part map (sections, SEARCH text, the
stored JSON) works on what it returns."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.mail import mime
from server.protocols.imap import bodystructure

# The parser proper, without analyze()'s fallback for messages it fails on: the fuzz
# target must show the parser never needs that fallback.
parse = getattr(bodystructure, "_analyze", bodystructure.analyze)

CONTENT_TYPES = [
    b"text/plain",
    b"text/html; charset=utf-8",
    b"application/octet-stream",
    b"message/rfc822",
    b"multipart/mixed",
    b"multipart/digest",
    b"multipart/alternative",
    b"multipart/mixed; boundary=",
    b"message/rfc822; x=y",
    b'text/plain; charset="',
]
BOUNDARIES = [b"a", b"ab", b"abc", b"=_x_=", b"b1", b"b10", b"", b"--", b" sp"]
FILLER = [
    b"hello\r\n",
    b"--a\r\n",
    b"--ab--\r\n",
    b"\r\n",
    b"Subject: x\r\n",
    b"--\r\n",
    b"=?utf-8?q?x?=\r\n",
    b"\n",
    b"\r",
    b"--abc",
    b"From: a@b\r\n\r\n",
]


@st.composite
def message(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A part: a random header, then (multipart) children between boundary lines,
    (message/rfc822) one nested message, or a text body. Boundaries repeat and prefix
    each other, closings go missing, and filler lines imitate boundaries."""
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    boundary = draw(st.sampled_from(BOUNDARIES))
    head = [b"MIME-Version: 1.0\r\n"] if draw(st.booleans()) else []
    if draw(st.integers(0, 9)):
        value = ctype + (
            b'; boundary="' + boundary + b'"'
            if ctype.startswith(b"multipart") and draw(st.booleans())
            else b""
        )
        head.append(b"Content-Type: " + value + b"\r\n")
    head += draw(st.lists(st.sampled_from(FILLER[4:7]), max_size=2))
    out = b"".join(head) + (b"\r\n" if draw(st.integers(0, 9)) else b"")
    if depth >= 6:
        return out + b"".join(draw(st.lists(st.sampled_from(FILLER), max_size=3)))
    if ctype.startswith(b"multipart"):
        for _ in range(draw(st.integers(0, 3))):
            out += b"--" + boundary + b"\r\n" + draw(message(depth + 1))
        if draw(st.booleans()):
            out += b"--" + boundary + b"--\r\n"
        return out + b"".join(draw(st.lists(st.sampled_from(FILLER), max_size=2)))
    if ctype.startswith(b"message"):
        return out + draw(message(depth + 1))
    return out + b"".join(draw(st.lists(st.sampled_from(FILLER), max_size=4)))


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """A chain of nested multiparts and message/rfc822 parts, hundreds deep, each level
    with its own boundary (or, sometimes, its parent's), cut off anywhere."""
    levels = draw(st.integers(1, 700))
    kinds = draw(st.lists(st.sampled_from([b"m", b"r", b"d"]), min_size=1, max_size=5))
    reuse = draw(st.booleans())
    parts = [b"From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"]
    for i in range(levels):
        kind = kinds[i % len(kinds)]
        if kind == b"r":
            parts.append(b"Content-Type: message/rfc822\r\n\r\nSubject: %d\r\n" % i)
            continue
        sub = b"digest" if kind == b"d" else b"mixed"
        name = b"=_0_=" if reuse else b"=_%d_=" % i
        parts.append(
            b'Content-Type: multipart/%s; boundary="%s"\r\n\r\n--%s\r\n' % (sub, name, name)
        )
    parts.append(b"Content-Type: text/plain\r\n\r\nthe end\r\n")
    raw = b"".join(parts)
    cut = draw(st.integers(0, 20))
    return raw[: len(raw) - cut] if cut else raw


def check(raw: bytes) -> None:
    info = parse(raw)
    assert info.size == len(raw)
    assert 0 <= info.header_len <= len(raw)
    assert bodystructure.MessageInfo.from_json(info.to_json()) == info
    assert info.bodystructure.startswith(b"(") and info.envelope.startswith(b"(")
    mime.text_contains(raw, "needle", info=info)
    mime.header_values(raw, "subject", info)
    path: list[int] = []
    part = info.part_map
    for _ in range(mime.MAX_NESTING + 5 if hasattr(mime, "MAX_NESTING") else 200):
        assert part.start <= part.body <= part.end <= len(raw)
        path.append(1)
        for spec in (None, "MIME", "HEADER", "TEXT"):
            mime.fetch_section(raw, info, tuple(path), spec)
        mime.fetch_section(raw, info, tuple(path), "HEADER.FIELDS", ["subject"])
        if not part.children:
            break
        part = part.children[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message())
def test_random_structures_never_raise(raw: bytes) -> None:
    check(raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deep())
def test_deep_nesting_never_raises(raw: bytes) -> None:
    check(raw)


@settings(max_examples=100, deadline=None)
@given(message(), st.integers(0, 4000), st.binary(max_size=6), st.integers(0, 4))
def test_mutated_messages_never_raise(raw: bytes, at: int, insert: bytes, drop: int) -> None:
    at = min(at, len(raw))
    check(raw[:at] + insert + raw[at + drop :])


def test_overflowing_part_is_one_opaque_leaf() -> None:
    """Past MAX_NESTING the part is not looked into: an application/octet-stream leaf
    running to its enclosing boundary, as Dovecot's max_nested_mime_parts makes it."""
    levels = mime.MAX_NESTING + 20
    raw = (
        b"MIME-Version: 1.0\r\n"
        + b"".join(
            b'Content-Type: multipart/mixed; boundary="=_%d_="\r\n\r\n--=_%d_=\r\n' % (i, i)
            for i in range(levels)
        )
        + b"Content-Type: text/plain\r\n\r\nx\r\n"
        + b"".join(b"--=_%d_=--\r\n" % i for i in reversed(range(levels)))
    )
    info = bodystructure.analyze(raw)
    part = info.part_map
    for _ in range(mime.MAX_NESTING):
        assert part.kind == mime.MULTIPART
        part = part.children[0]
    assert part.kind == mime.LEAF and part.ctype == "application/octet-stream"
    inner = raw.index(b"--=_%d_=\r\n" % mime.MAX_NESTING)
    assert part.body == inner and raw[part.end :].startswith(
        b"\r\n--=_%d_=--" % (mime.MAX_NESTING - 1)
    )
    assert b'("application" "octet-stream" NIL NIL NIL "7bit" ' in info.bodystructure
