"""MIME messages: the part tree (RFC 2045/2046), RFC 5322 and RFC 2045 header lexers,
addresses, decoded text. No protocol: IMAP's ENVELOPE/BODYSTRUCTURE wire forms and the
MessageInfo the store caches are server.protocols.imap.bodystructure's.

Pure functions over the stored message bytes. `parse()` builds the tree once; a `Part`
map (byte offsets, kept by the store) then serves BODY[section] through `fetch_section()`
without re-parsing, and SEARCH through `header_values()` and `text_contains()`.

Where the RFCs leave a choice the answers follow Dovecot 2.3 (message-parser.c,
rfc822-parser.c), so the two can be compared side by side
(tests/unit/mail/test_mime_corpus.py). In particular:
- A part boundary is any line starting with "--" + a boundary of an enclosing multipart
  (prefix match, longest wins); the line break before it belongs to the boundary.
- Content-* headers count only in MIME parts (MIME-Version or Content-Type present, or
  inside a multipart); parts of multipart/digest default to message/rfc822.
- An empty entry in an address list is an address with "MISSING_MAILBOX" and
  "MISSING_DOMAIN"; the list ends where something other than "," or ";" follows an
  address (e.g. an un-bracketed obs-route, RFC 5322 section 4.4).
- A parameter with nothing after "=" has the empty value ("charset" "").
- Sizes and line counts are of the stored bytes. The store hands over CRLF messages; bare
  LF input works (nothing is lost) but then sizes count the bytes as stored.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import CharsetError
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Protocol

__all__ = [
    "Node",
    "Part",
    "parse",
    "fetch_section",
    "header_values",
    "text_contains",
    "decode_words",
    "decoded_text",
    "find_part",
    "nul_safe",
]

LEAF, MULTIPART, MESSAGE = 0, 1, 2

#: Multipart and message/rfc822 parts nested deeper than this are not looked into (Dovecot's
#: max_nested_mime_parts default). Everything that walks the part tree recurses, so this
#: also keeps a hostile message far from Python's recursion limit.
MAX_NESTING = 100

_LWSP = b" \t"
_CRLF = b"\r\n"


# --- the part map -------------------------------------------------------------------------


@dataclass(slots=True)
class Part:
    """One node of the MIME tree, as byte offsets into the stored message.

    The root is the whole message. A multipart node's children are its body parts; a
    message/rfc822 node has one child: the encapsulated message (whose header is the
    embedded header). `start:body` is the header including its blank line, `body:end` the
    body (without the line break that precedes the next boundary)."""

    start: int
    body: int
    end: int
    kind: int = LEAF
    ctype: str = "text/plain"  # lower-case type/subtype
    cte: str = "7bit"  # lower-case Content-Transfer-Encoding
    charset: str | None = None  # lower-case charset parameter, if any
    children: list[Part] = field(default_factory=list)

    def to_list(self) -> list:
        return [
            self.start,
            self.body,
            self.end,
            self.kind,
            self.ctype,
            self.cte,
            self.charset,
            [c.to_list() for c in self.children],
        ]

    @classmethod
    def from_list(cls, data: list) -> Part:
        start, body, end, kind, ctype, cte, charset, children = data
        return cls(
            start, body, end, kind, ctype, cte, charset, [cls.from_list(c) for c in children]
        )


# --- header scanning ----------------------------------------------------------------------


@dataclass(slots=True)
class Field:
    name: bytes  # as written, without the trailing white space before ':'
    value: bytes  # unfolded as Dovecot does: leading LWSP dropped, lines joined by LF
    start: int  # offset of the first line
    end: int  # offset after the last line's line break


def header_fields(raw: bytes, start: int, end: int) -> list[Field]:
    """The header fields of raw[start:end] (a header block; a blank line stops it)."""
    fields: list[Field] = []
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        content_end = end if nl < 0 else (nl - 1 if nl > pos and raw[nl - 1] == 13 else nl)
        if content_end == pos and nl >= 0:
            break  # the blank line
        line = raw[pos:content_end]
        if fields and line[:1] in (b" ", b"\t"):
            f = fields[-1]
            f.value += b"\n" + line
            f.end = line_end
        else:
            colon = line.find(b":")
            if colon < 0:
                fields.append(Field(line, b"", pos, line_end))
            else:
                value = line[colon + 1 :]
                stripped = value.lstrip(_LWSP)
                if not stripped and value:
                    stripped = value[1:]
                fields.append(Field(line[:colon].rstrip(_LWSP), stripped, pos, line_end))
        pos = line_end
    return fields


# --- RFC 822 / MIME value tokenizer -------------------------------------------------------

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_TOKEN_BYTES = bytes(c for c in range(256) if c > 0x20 and c != 0x7F and c not in _TSPECIALS)
_ATOM_SPECIALS = frozenset(b'()<>@,;:\\".[]')
_ATEXT = frozenset(c for c in range(256) if c > 0x20 and c != 0x7F and c not in _ATOM_SPECIALS)
_TOKEN_RE = re.compile(b"[" + re.escape(_TOKEN_BYTES) + b"]+")


class _Lexer:
    """rfc822-parser.c in miniature: white space and (comments) are skipped between
    tokens; the last comment seen is kept (an address's comment can be its name)."""

    __slots__ = ("s", "i", "n", "last_comment")

    def __init__(self, s: bytes) -> None:
        self.s = s
        self.i = 0
        self.n = len(s)
        self.last_comment = b""

    def skip(self) -> bool:
        """Skip CFWS; True if anything is left."""
        s, n = self.s, self.n
        while self.i < n:
            c = s[self.i]
            if c in (32, 9, 13, 10):
                self.i += 1
            elif c == 40:  # (
                depth, j, buf = 1, self.i + 1, bytearray()
                while j < n and depth:
                    cj = s[j]
                    if cj == 92 and j + 1 < n:  # backslash
                        buf.append(s[j + 1])
                        j += 2
                        continue
                    if cj == 40:
                        depth += 1
                    elif cj == 41:
                        depth -= 1
                        if not depth:
                            j += 1
                            break
                    if cj not in (13, 10):
                        buf.append(cj)
                    j += 1
                self.last_comment = bytes(buf)
                self.i = j
            else:
                return True
        return False

    def peek(self) -> int:
        return self.s[self.i] if self.i < self.n else -1

    def token(self) -> bytes | None:
        m = _TOKEN_RE.match(self.s, self.i)
        if not m:
            return None
        self.i = m.end()
        return m.group()

    def atom(self) -> bytes | None:
        s, j = self.s, self.i
        while j < self.n and s[j] in _ATEXT:
            j += 1
        if j == self.i:
            return None
        out = s[self.i : j]
        self.i = j
        return out

    def quoted(self) -> bytes:
        """A quoted-string at the current position (unterminated ones run to the end)."""
        s, j, buf = self.s, self.i + 1, bytearray()
        while j < self.n:
            c = s[j]
            if c == 92 and j + 1 < self.n:
                buf.append(s[j + 1])
                j += 2
                continue
            if c == 34:
                j += 1
                break
            if c not in (13, 10):
                buf.append(c)
            j += 1
        self.i = j
        return bytes(buf)


def _parse_content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bool]:
    """(type, subtype, params, ok); a broken value gives ("", "", [], False) as Dovecot."""
    lx = _Lexer(value)
    if not lx.skip():
        return b"", b"", [], False
    main = lx.token()
    if not main or lx.peek() != 47:  # /
        return b"", b"", [], False
    lx.i += 1
    if not lx.skip():
        return b"", b"", [], False
    sub = lx.token()
    if not sub:
        return b"", b"", [], False
    return main, sub, _parse_params(lx), True


def _parse_params(lx: _Lexer) -> list[tuple[bytes, bytes]]:
    """Parameters after the type, RFC 2231 continuations merged as rfc2231-parser.c does."""
    plain: list[tuple[bytes, bytes]] = []
    ext: list[tuple[bytes, int, bool, bytes]] = []  # key, index, extended, value
    while True:
        lx.skip()
        if lx.i >= lx.n:
            break
        if lx.peek() != 59:  # ; -- junk: skip a byte and try again
            lx.i += 1
            continue
        lx.i += 1
        if not lx.skip():
            break
        key = lx.token()
        if key is None:
            continue
        lx.skip()
        if lx.peek() != 61:  # =
            continue
        lx.i += 1
        lx.skip()
        if lx.peek() == 34:
            val = lx.quoted()
        elif lx.peek() == 61:  # name==?utf-8?b?...?= (an unquoted encoded word)
            j = lx.i
            while j < lx.n and lx.s[j] not in b"; \t\r\n":
                j += 1
            val, lx.i = lx.s[lx.i : j], j
        else:
            # "charset=" with nothing after it is a parameter with an empty value, as in
            # Dovecot: it is listed as "", and a text part then gets no us-ascii default.
            val = lx.token() or b""
        star = key.find(b"*")
        if star >= 0:
            rest = key[star + 1 :]
            digits = rest[: len(rest) - len(rest.lstrip(b"0123456789"))]
            tail = rest[len(digits) :]
            if tail in (b"", b"*"):
                extended = tail == b"*" or not rest  # "name*" is an extended value
                ext.append((key[:star], int(digits) if digits else 0, extended, val))
                continue
        plain.append((key, val))
    if not ext:
        return plain
    ext.sort(key=lambda e: (e[0], e[1]))
    i = 0
    while i < len(ext):
        j = i
        while j < len(ext) and ext[j][0].lower() == ext[i][0].lower():
            j += 1
        group = ext[i:j]
        if any(e[1] != k for k, e in enumerate(group)):
            for key, idx, extended, val in group:
                plain.append((key + b"*%d" % idx + (b"*" if extended else b""), val))
        else:
            have_ext = any(e[2] for e in group)
            out = b"''" if have_ext and not group[0][2] else b""
            for _, _, extended, val in group:
                out += val.replace(b"%", b"%25") if have_ext and not extended else val
            plain.append((group[0][0] + (b"*" if have_ext else b""), out))
        i = j
    return plain


# --- addresses ----------------------------------------------------------------------------

_Addr = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
_EMPTY_ADDR: _Addr = (None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")


#: Joins the values of repeated address fields. Each is read as a list of its own (a broken
#: or unclosed list in one doesn't swallow the next, as in Dovecot). A field value never
#: holds LF followed by anything but LWSP (that is how folding is kept), so this is safe.
_FIELD_BREAK = b"\n\n"


def parse_addresses(value: bytes) -> list[_Addr]:
    """RFC 5322 address-list -> ENVELOPE address tuples (name, route, mailbox, host), with
    group start (NIL NIL group NIL) and group end (NIL NIL NIL NIL) markers."""
    if _FIELD_BREAK in value:
        return [a for one in value.split(_FIELD_BREAK) for a in parse_addresses(one)]
    lx = _Lexer(value)
    out: list[_Addr] = []
    in_group = False
    # An entry is due at the start, after a comma and after a group's colon. An empty one
    # ("a@x, , b@y", ",a@x", "g: a@x,;") is kept as an address with neither mailbox nor
    # host, as Dovecot does; an empty group ("g:;") and a trailing comma add nothing.
    due = True
    after_colon = False
    while lx.skip():
        c = lx.peek()
        if c == 59 and in_group and not due:  # ;
            lx.i += 1
            out.append((None, None, None, None))
            in_group = False
            continue
        if c == 59 and in_group and after_colon:  # "g:;"
            lx.i += 1
            out.append((None, None, None, None))
            in_group = after_colon = False
            due = False
            continue
        if c == 44 and not due:  # ,
            lx.i += 1
            due = True
            after_colon = False
            continue
        if not due:
            # Something other than "," or ";" after an address: the list is broken here
            # (e.g. an obs-route "@route:user@host" without its angle brackets, RFC 5322
            # section 4.4). Dovecot keeps what came before and ignores the rest.
            break
        start = lx.i
        phrase = _phrase(lx)
        lx.skip()
        if phrase is not None and lx.peek() == 58 and not in_group:  # group:
            lx.i += 1
            out.append((None, None, phrase, None))
            in_group = after_colon = True
            continue
        lx.i = start
        due = after_colon = False
        addr = _mailbox(lx)
        if addr is None:
            out.append(_EMPTY_ADDR)
            if lx.peek() not in (44, 59):
                break  # not an address at all: nothing after it is read
            continue
        out.append(addr)
    if in_group:
        out.append((None, None, None, None))
    return out


def _phrase(lx: _Lexer) -> bytes | None:
    """display-name words (atoms, dots, quoted strings) joined by single spaces."""
    words: list[bytes] = []
    while lx.skip():
        c = lx.peek()
        if c == 34:
            words.append(lx.quoted())
        elif c == 46:  # obsolete phrase: "John Q. Public"
            lx.i += 1
            if words:
                words[-1] += b"."
            else:
                words.append(b".")
        else:
            a = lx.atom()
            if a is None:
                break
            if words and words[-1].endswith(b"."):
                words[-1] += a
            else:
                words.append(a)
    return b" ".join(words) if words else None


def _mailbox(lx: _Lexer) -> _Addr | None:
    start = lx.i
    name = _phrase(lx)
    lx.skip()
    if lx.peek() == 60:  # <
        lx.i += 1
        route = None
        lx.skip()
        if lx.peek() == 64:  # @route,@route:
            j = lx.s.find(b":", lx.i)
            if j >= 0:
                route = re.sub(rb"\s+", b"", lx.s[lx.i : j])
                lx.i = j + 1
        mailbox, host = _addr_spec(lx)
        lx.skip()
        if lx.peek() == 62:
            lx.i += 1
        return (name, route, mailbox or b"MISSING_MAILBOX", host or b"MISSING_DOMAIN")
    lx.i = start
    lx.last_comment = b""
    if not lx.skip():
        return None
    if lx.peek() in (44, 59):
        return None
    mailbox, host = _addr_spec(lx)
    if mailbox is None and host is None:
        return None
    lx.skip()
    name = lx.last_comment or None
    return (name, None, mailbox, host)


def _addr_spec(lx: _Lexer) -> tuple[bytes | None, bytes | None]:
    local = b""
    while lx.skip():
        c = lx.peek()
        if c == 34:
            q = lx.quoted()
            local += b'"' + q.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        elif c == 46:
            local += b"."
            lx.i += 1
        else:
            a = lx.atom()
            if a is None:
                break
            local += a
    host = None
    if lx.skip() and lx.peek() == 64:
        lx.i += 1
        lx.skip()
        host = b""
        while lx.i < lx.n:
            c = lx.peek()
            if c == 91:  # [domain literal]
                j = lx.s.find(b"]", lx.i)
                j = lx.n if j < 0 else j + 1
                host += lx.s[lx.i : j]
                lx.i = j
            elif c == 46:
                host += b"."
                lx.i += 1
            else:
                a = lx.atom()
                if a is None:
                    break
                host += a
            if not lx.skip():
                break
    if not local and host is None:
        return None, None
    return (local or b"MISSING_MAILBOX"), (host or b"MISSING_DOMAIN")


def _quote_phrase(word: bytes) -> bytes:
    if all(c in _ATEXT for c in word):
        return word
    return b'"' + word.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def address_search_text(value: bytes) -> str:
    """An address header as SEARCH FROM/TO/CC/BCC matches it: the parsed list written out
    again (name <route:mailbox@host>, group: ...;), then encoded words decoded, as Dovecot
    does. Comments and white space inside an address then don't hide it:
    "<user (c)@ (c) example.org>" is found by "user@example.org"."""
    out = bytearray()
    sep = b""
    in_group = False
    for name, route, mailbox, host in parse_addresses(value):
        if host is None:
            if not in_group:
                out += sep + (_quote_phrase(mailbox) if mailbox else b'""') + b": "
                sep = b""
            else:
                out[:] = out.rstrip(b" ") + b";"
                sep = b", "
            in_group = not in_group
            continue
        out += sep
        sep = b", "
        if name is not None:
            out += (name if b"=?" in name else _quote_phrase(name)) + b" "
        out += b"<" + (route + b":" if route else b"") + (mailbox or b"") + b"@" + host + b">"
    return decode_words(bytes(out)).strip()


# --- text helpers ---------------------------------------------------------------------------


def nolf(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


def for_humans(value: bytes) -> bytes:
    """imap_append_string_for_humans(): no line breaks, white space runs collapsed and
    trimmed, NUL shown as 0x80."""
    return collapse(nolf(value).replace(b"\x00", b"\x80"))


def collapse(v: bytes) -> bytes:
    return re.sub(rb"[ \t]+", b" ", v).strip(b" ")


def decode_words(value: bytes | str) -> str:
    """Header text with RFC 2047 encoded words decoded and folding removed, for SEARCH.
    Undecodable bytes are read as UTF-8 with replacement characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.replace("\r", "").replace("\n", "")
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    # CharsetError: a charset name the email package cannot even spell in ASCII (a
    # replacement character from an undecodable byte).
    except (LookupError, ValueError, UnicodeError, binascii.Error, CharsetError):
        return value


# --- the MIME parser --------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """One part as parsed: its Part (offsets) plus its header fields and Content-Type, for
    whoever describes the part (IMAP's BODYSTRUCTURE) without parsing it again."""

    part: Part
    fields: list[Field]
    is_mime: bool = False
    flags_text: bool = False
    ctype_ok: bool = False
    main: bytes | None = None  # None: no (usable) Content-Type
    sub: bytes = b""
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    boundary: bytes | None = None
    nodes: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class _Hit:
    """A boundary line found while scanning: where its line break starts, where the line
    itself starts and ends, which multipart it belongs to and whether it closes it."""

    nl: int
    line: int
    after: int
    owner: Node
    closing: bool


class _Parser:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.n = len(raw)
        self.stack: list[tuple[bytes, Node]] = []  # open boundaries, innermost last

    def _match(self, pos: int) -> tuple[bytes, Node] | None:
        """The longest open boundary that `raw[pos:]` starts with."""
        best = None
        raw = self.raw
        for b, owner in reversed(self.stack):
            if raw.startswith(b, pos) and (best is None or len(b) > len(best[0])):
                best = (b, owner)
        return best

    def _hit_at(self, line: int, nl: int) -> _Hit | None:
        raw = self.raw
        if not self.stack or raw[line : line + 2] != b"--":
            return None
        m = self._match(line + 2)
        if m is None:
            return None
        b, owner = m
        tail = line + 2 + len(b)
        closing = raw[tail : tail + 2] == b"--"
        eol = raw.find(b"\n", line)
        return _Hit(nl, line, self.n if eol < 0 else eol + 1, owner, closing)

    def _find_hit(self, pos: int) -> _Hit | None:
        """The next boundary line at or after pos (pos is at a line start)."""
        if not self.stack:
            return None
        hit = self._hit_at(pos, pos)
        if hit:
            return hit
        raw = self.raw
        i = pos
        while True:
            j = raw.find(b"\n--", i)
            if j < 0:
                return None
            nl = j - 1 if j - 1 >= pos and raw[j - 1] == 13 else j
            hit = self._hit_at(j + 1, nl)
            if hit:
                return hit
            i = j + 1

    def _header(self, start: int) -> tuple[int, int, _Hit | None]:
        """Scan a header from start: (end of the last field line, body start, boundary hit
        that cut the header short). With a blank line the body starts after it."""
        raw, n = self.raw, self.n
        pos = start
        prev_nl = 0
        while pos < n:
            if self.stack and raw[pos : pos + 2] == b"--":
                hit = self._hit_at(pos, pos - prev_nl)
                if hit:
                    return pos - prev_nl, pos - prev_nl, hit
            nl = raw.find(b"\n", pos)
            if nl < 0:
                return n, n, None
            if nl == pos or (nl == pos + 1 and raw[pos] == 13):
                return pos, nl + 1, None
            prev_nl = 2 if raw[nl - 1] == 13 else 1
            pos = nl + 1
        return n, n, None

    def parse(self, start: int, parent: Node | None, depth: int = 0) -> tuple[Node, _Hit | None]:
        """The part at `start`; depth: how many multipart and message/rfc822 parts
        enclose it (see MAX_NESTING)."""
        raw = self.raw
        part = Part(start, start, start)
        node = Node(part, [])
        fields_end, body, hit = self._header(start)
        cut_in_header = hit is not None
        node.fields = header_fields(raw, start, fields_end)
        self._classify(node, parent, depth)
        if hit is None and body > fields_end and self.stack:
            # An outer boundary right after the blank line takes the blank line's line
            # break (Dovecot); this part's own boundary counts as open already.
            own = part.kind == MULTIPART and node.boundary is not None
            if own:
                self.stack.append((node.boundary, node))  # type: ignore[arg-type]
            hit = self._hit_at(body, fields_end)
            if own:
                self.stack.pop()
            if hit is not None and hit.owner is node:
                hit = None
            if hit is not None:
                body = fields_end
        part.body = body
        if hit is not None:
            # A boundary cut the header short: this part is empty. Dovecot gives the
            # line break before that boundary to the enclosing parts, not to the boundary.
            part.end = body
            if part.kind == MESSAGE:
                child = Node(Part(body, body, body), [])
                self._classify(child, node, depth + 1)
                node.nodes.append(child)
                part.children.append(child.part)
            if cut_in_header:
                hit.nl = hit.line
            return node, hit
        if part.kind == MULTIPART and node.boundary is not None:
            return node, self._multipart_body(node, depth)
        if part.kind == MESSAGE:
            child, hit = self.parse(body, node, depth + 1)
            node.nodes.append(child)
            part.children.append(child.part)
            part.end = hit.nl if hit is not None else self.n
            return node, hit
        hit = self._find_hit(body)
        part.end = hit.nl if hit else self.n
        return node, hit

    def _multipart_body(self, node: Node, depth: int) -> _Hit | None:
        assert node.boundary is not None
        self.stack.append((node.boundary, node))
        part = node.part
        hit = self._find_hit(part.body)
        while True:
            if hit is None:
                part.end = self.n
                return None
            if hit.owner is not node:
                part.end = hit.nl
                return hit
            idx = next(i for i, (_, o) in enumerate(self.stack) if o is node)
            del self.stack[idx if hit.closing else idx + 1 :]
            if hit.closing:
                hit = self._find_hit(hit.after)
                continue  # epilogue: runs to an outer boundary or the end
            child, hit = self.parse(hit.after, node, depth + 1)
            node.nodes.append(child)
            part.children.append(child.part)

    def _classify(self, node: Node, parent: Node | None, depth: int) -> None:
        """Content-Type and friends -> kind, type, boundary (message-parser.c rules)."""
        part = node.part
        in_multipart = parent is not None and parent.part.kind == MULTIPART
        node.is_mime = in_multipart
        ct: Field | None = None
        for f in node.fields:
            name = f.name.lower()
            if name == b"mime-version":
                node.is_mime = True
            elif name == b"content-type":
                node.is_mime = True
                if ct is None:
                    ct = f
        if ct is not None and node.is_mime:
            main, sub, params, ok = _parse_content_type(ct.value)
            node.main, node.sub, node.params, node.ctype_ok = main, sub, params, ok
            lmain, lsub = main.lower(), sub.lower()
            if lmain == b"message" and lsub == b"rfc822":
                part.kind = MESSAGE
            elif lmain == b"multipart" and ok:
                part.kind = MULTIPART
                for k, v in params:
                    if k.lower() == b"boundary":
                        node.boundary = v
                        break
            part.ctype = (lmain + b"/" + lsub).decode("latin-1") if ok else ""
            for k, v in params:
                if k.lower() == b"charset":
                    part.charset = v.decode("latin-1").lower()
                    break
        else:
            digest = (
                parent is not None
                and parent.part.kind == MULTIPART
                and (parent.sub.lower() == b"digest")
            )
            if digest:
                part.kind = MESSAGE
                part.ctype = "message/rfc822"
        if part.kind != LEAF and depth >= MAX_NESTING:
            # Too deep to look into: one opaque part, as Dovecot's max_nested_mime_parts
            # makes it. Its body (nested boundaries and all) runs to the next boundary of
            # an enclosing part, which keeps the other parts' offsets as they were.
            part.kind = LEAF
            part.ctype, part.charset = "application/octet-stream", None
            node.main, node.sub, node.params, node.boundary = (
                b"application",
                b"octet-stream",
                [],
                None,
            )
        if node.is_mime:
            for f in node.fields:
                if f.name.lower() == b"content-transfer-encoding":
                    lx = _Lexer(f.value)
                    lx.skip()
                    tok = lx.token()
                    if tok and not lx.skip():
                        part.cte = tok.decode("latin-1").lower()
                    break


# --- Content-* fields and the originator/destination fields -----------------------------


def content_fields(node: Node) -> dict[bytes, bytes | list]:
    """The first of each Content-* header (Dovecot's rules), parsed."""
    out: dict[bytes, bytes | list] = {}
    if not node.is_mime:
        return out
    for f in node.fields:
        name = f.name.lower()
        if not name.startswith(b"content-"):
            continue
        key = name[8:]
        if key in (b"id", b"md5", b"description", b"location") and key not in out:
            out[key] = f.value
        elif key == b"transfer-encoding" and key not in out:
            lx = _Lexer(f.value)
            lx.skip()
            tok = lx.token()
            if tok and not lx.skip():
                out[key] = tok
        elif key == b"language" and key not in out:
            lx = _Lexer(f.value)
            langs = []
            lx.skip()
            while (a := lx.atom()) is not None:
                langs.append(a)
                if lx.peek() != 44:
                    break
                lx.i += 1
                lx.skip()
            if langs:
                out[key] = langs
        elif key == b"disposition" and not out.get(b"disposition-params"):
            lx = _Lexer(f.value)
            lx.skip()
            tok = lx.token()
            if tok is not None:
                out[key] = tok
                params = _parse_params(lx)
                out[b"disposition-params"] = [x for kv in params for x in kv]
    return out


_ENVELOPE_FIELDS = {
    b"date": 0,
    b"subject": 1,
    b"from": 2,
    b"sender": 3,
    b"reply-to": 4,
    b"to": 5,
    b"cc": 6,
    b"bcc": 7,
    b"in-reply-to": 8,
    b"message-id": 9,
}


def envelope_values(node: Node) -> list[bytes | None]:
    """The raw value of each ENVELOPE header. As Dovecot: of repeated string fields the
    last counts; repeated address fields are joined into one list (_FIELD_BREAK)."""
    vals: list[bytes | None] = [None] * 10
    for f in node.fields:
        i = _ENVELOPE_FIELDS.get(f.name.lower())
        if i is None:
            continue
        prev = vals[i]
        vals[i] = prev + _FIELD_BREAK + f.value if prev is not None and 2 <= i <= 7 else f.value
    return vals


# --- the tree and what is read from it -----------------------------------------------------


def parse(raw: bytes) -> Node:
    """The MIME tree of a message: its root Node (root.part is the part map to keep)."""
    root, _ = _Parser(raw).parse(0, None)
    return root


def parse_date(value: bytes | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = parsedate_to_datetime(nolf(value).decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class HasParts(Protocol):
    """Anything that carries a message's part map, such as the IMAP MessageInfo the store
    caches (server.protocols.imap.bodystructure)."""

    @property
    def part_map(self) -> Part: ...


def _part_of(info: HasParts | Part) -> Part:
    return info if isinstance(info, Part) else info.part_map


def find_part(root: Part, section_part: tuple[int, ...]) -> Part | None:
    """The node a section number names (RFC 3501 section 6.4.5), or None.

    In a non-multipart node only part 1 exists and is the node itself; a number after a
    message/rfc822 part continues inside the encapsulated message."""
    part: Part | None = root
    for i, num in enumerate(section_part):
        assert part is not None
        if part.kind == MULTIPART:
            part = part.children[num - 1] if 0 < num <= len(part.children) else None
        elif num != 1 or (i + 1 < len(section_part) and part.kind != MESSAGE):
            part = None
        if part is None:
            return None
        if part.kind == MESSAGE and i + 1 < len(section_part):
            part = part.children[0]
    return part


def fetch_section(
    raw: bytes,
    info_or_partmap: HasParts | Part,
    section_part: tuple[int, ...] = (),
    specifier: str | None = None,
    fields: list[str] | None = None,
    not_: bool = False,
) -> bytes:
    """The exact bytes of BODY[section] (before any <partial>, which the caller applies).

    section_part: the part numbers, () for the whole message.
    specifier: None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME"
    (case-insensitive); fields: the field names for HEADER.FIELDS[.NOT]; not_=True turns
    HEADER.FIELDS into HEADER.FIELDS.NOT. A part that does not exist, or HEADER/TEXT of a
    part that is not message/rfc822, gives b"" (as Dovecot)."""
    root = _part_of(info_or_partmap)
    spec = (specifier or "").upper()
    if spec == "HEADER.FIELDS.NOT":
        spec, not_ = "HEADER.FIELDS", True
    part = find_part(root, section_part) if section_part else root
    if part is None:
        return b""
    if spec == "":
        return raw[part.start : part.end] if not section_part else raw[part.body : part.end]
    if spec == "MIME":
        return raw[part.start : part.body] if section_part else b""
    if section_part:
        if part.kind != MESSAGE:
            return b""
        part = part.children[0]
    if spec == "TEXT":
        return raw[part.body : part.end]
    if spec == "HEADER":
        return raw[part.start : part.body]
    if spec == "HEADER.FIELDS":
        return _filter_header(raw, part, fields or [], not_)
    raise ValueError(f"unknown section specifier {specifier!r}")


def _filter_header(raw: bytes, part: Part, names: list[str], exclude: bool) -> bytes:
    """HEADER.FIELDS[.NOT]: the matching field lines as stored (continuations included),
    then the blank line."""
    return header_filter(names, exclude)(raw[part.start : part.body])


def _blank_line(block: bytes) -> bytes:
    return b"\n" if block.endswith(b"\n\n") and not block.endswith(b"\r\n\r\n") else _CRLF


def _filter_block(block: bytes, wanted: frozenset[bytes], exclude: bool) -> bytes:
    out = bytearray()
    for f in header_fields(block, 0, len(block)):
        if (f.name.lower() in wanted) != exclude:
            line = block[f.start : f.end]
            out += line
            if not line.endswith(b"\n"):
                out += _CRLF
    out += _blank_line(block)
    return bytes(out)


_PLAIN_NAME = re.compile(rb"[!-9;-~]+")  # printable ASCII but ':': a name a regex can match
_FILTERS: dict[tuple[frozenset[bytes], bool], Callable[[bytes], bytes]] = {}


def header_filter(names: Iterable[str], exclude: bool = False) -> Callable[[bytes], bytes]:
    """HEADER.FIELDS (or, with exclude, HEADER.FIELDS.NOT) as a function of a header
    block (the header with its blank line: a message's first header_len octets, or
    raw[part.start:part.body]). Made once per FETCH command, applied per message: for
    plain field names one regular expression finds the fields (with their continuation
    lines) instead of splitting every line in Python. Cached per name set."""
    wanted = frozenset(n.lower().encode("latin-1", "replace") for n in names)
    key = (wanted, exclude)
    found = _FILTERS.get(key)
    if found is not None:
        return found
    if exclude or not all(_PLAIN_NAME.fullmatch(n) for n in wanted):

        def slow(block: bytes) -> bytes:
            return _filter_block(block, wanted, exclude)

        found = slow
    elif not wanted:
        found = _blank_line
    else:
        # A field line starting with a wanted name, then its colon (or nothing: a line
        # without colon is a field named by the whole line, see header_fields), then its
        # continuation lines (starting with white space).
        alternatives = b"|".join(re.escape(n) for n in sorted(wanted))
        pattern = re.compile(
            rb"^(?:" + alternatives + rb")(?:[ \t]*:[^\n]*\n?|\r?\n|\Z)(?:[ \t][^\n]*\n?)*",
            re.IGNORECASE | re.MULTILINE,
        )
        findall = pattern.findall

        def fast(block: bytes) -> bytes:
            found = findall(block)
            if not found:
                return _blank_line(block)
            if not found[-1].endswith(b"\n"):  # the header ran to the end: no line break
                found.append(_CRLF)
            found.append(_blank_line(block))
            return b"".join(found)

        found = fast
    if len(_FILTERS) < 256:
        _FILTERS[key] = found
    return found


def nul_safe(data: bytes) -> bytes:
    """IMAP literals may not carry NUL (RFC 3501 section 4.3); like Dovecot, FETCH sends
    each NUL of a stored message as 0x80. Apply to fetch_section() output before sending."""
    return data.replace(b"\x00", b"\x80") if b"\x00" in data else data


def header_values(raw: bytes, name: str, info: HasParts | Part | None = None) -> list[str]:
    """Every top-level header field called `name` (case-insensitive), decoded for SEARCH
    (RFC 2047 words decoded, folding removed), in message order."""
    end = _part_of(info).body if info is not None else header_end(raw)
    want = name.lower().encode("latin-1")
    return [
        decode_words(f.value).strip() for f in header_fields(raw, 0, end) if f.name.lower() == want
    ]


def header_end(raw: bytes) -> int:
    m = re.search(rb"\r?\n\r?\n", raw)
    if raw.startswith((b"\r\n", b"\n")):
        return 2 if raw.startswith(b"\r\n") else 1
    return m.end() if m else len(raw)


def text_contains(
    raw: bytes,
    needle: str,
    headers: bool = True,
    body: bool = True,
    info: HasParts | Part | None = None,
) -> bool:
    """SEARCH TEXT (headers and body) / BODY (body only): case-insensitive substring match
    on decoded text. Bodies are decoded from base64/quoted-printable and their charset;
    only text/* parts and encapsulated messages' headers are searched."""
    want = needle.casefold()
    root = _part_of(info) if info is not None else parse(raw).part
    if headers and want in decode_words(raw[root.start : root.body]).casefold():
        return True
    if not body:
        return False
    return any(want in t.casefold() for t in _body_texts(raw, root, top=True))


def _body_texts(raw: bytes, part: Part, top: bool = False):
    if part.kind == MULTIPART:
        for c in part.children:
            yield from _body_texts(raw, c)
    elif part.kind == MESSAGE:
        inner = part.children[0]
        yield decode_words(raw[inner.start : inner.body])
        yield from _body_texts(raw, inner, top=True)
    elif part.ctype.startswith("text/") or part.ctype in ("", "text"):
        yield decoded_text(raw, part)


def decoded_text(raw: bytes, part: Part) -> str:
    """A leaf part's body with its transfer encoding and charset undone."""
    data = raw[part.body : part.end]
    try:
        if part.cte == "base64":
            data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            data = binascii.a2b_base64(data[: len(data) - len(data) % 4])
        elif part.cte == "quoted-printable":
            data = binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        pass
    charset = part.charset or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, "replace")


def from_addresses(raw: bytes) -> list[str]:
    """The mailbox@host of every From address of a message's top-level header, as its
    ENVELOPE will show them (submission's SendAs check reads what the recipient will see)."""
    end = header_end(raw)
    out = []
    for f in header_fields(raw, 0, end):
        if f.name.lower() != b"from":
            continue
        for _, _, box, host in parse_addresses(f.value):
            if box is not None and host is not None:
                out.append(f"{box.decode('utf-8', 'replace')}@{host.decode('utf-8', 'replace')}")
            elif box is not None:
                out.append(box.decode("utf-8", "replace"))
    return out
