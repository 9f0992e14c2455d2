"""IMAP's view of a message: ENVELOPE, BODY and BODYSTRUCTURE in wire form (RFC 3501
section 7.4.2), and the `MessageInfo` the store caches for FETCH and SEARCH.

The MIME tree and the header lexers are server.mail.mime's; this module only says how
IMAP writes them. The store calls `analyze()` once per message (at delivery for a big one,
on first use for a small one: server/store/sqlite/writes.py, ANALYZE_FROM) and keeps
`MessageInfo.to_json()`; FETCH serves `info.envelope` / `info.body` / `info.bodystructure`
as they are (wire bytes) and BODY[section] through `mime.fetch_section()` on the raw bytes
plus the cached part map, without re-parsing.

Where RFC 3501 leaves a choice the answers follow Dovecot 2.3 (imap-bodystructure.c,
imap-envelope.c; see server.mail.mime for the MIME rules), so the two can be compared side
by side (tests/unit/mail/test_mime_corpus.py). In particular:
- MIME types, subtypes and parameters are sent as found in the message; defaults are
  lower-case ("text" "plain" ("charset" "us-ascii"), "7bit").
- ENVELOPE strings are the header values as sent (encoded words stay encoded), with line
  breaks removed; the subject and display names also have runs of white space collapsed.
  An address without a domain gets "MISSING_DOMAIN" (a NIL host would read as a group
  start, RFC 3501 section 7.4.2).
- A top-level plain 7-bit US-ASCII text part is answered in the canonical lower-case form.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from server.mail import mime
from server.protocols.imap.wire import Raw, encode

log = logging.getLogger("mailctl.mime")


@dataclass(slots=True)
class MessageInfo:
    """What `analyze()` learns about a message; everything FETCH and SEARCH need."""

    envelope: bytes  # wire form of ENVELOPE, e.g. b'("date" "subject" ...)'
    body: bytes  # wire form of BODY (non-extensible BODYSTRUCTURE)
    bodystructure: bytes  # wire form of BODYSTRUCTURE
    header_len: int  # octets of the top-level header, blank line included
    size: int  # octets of the whole message (RFC822.SIZE)
    date_sent: datetime | None  # Date: header, timezone-aware; None if missing/invalid
    subject: str  # decoded (RFC 2047) text, "" if absent
    from_: str
    to: str
    cc: str
    bcc: str
    message_id: str
    in_reply_to: str
    part_map: mime.Part

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "envelope": self.envelope.decode("latin-1"),
                "body": self.body.decode("latin-1"),
                "bodystructure": self.bodystructure.decode("latin-1"),
                "header_len": self.header_len,
                "size": self.size,
                "date_sent": self.date_sent.isoformat() if self.date_sent else None,
                "subject": self.subject,
                "from": self.from_,
                "to": self.to,
                "cc": self.cc,
                "bcc": self.bcc,
                "message_id": self.message_id,
                "in_reply_to": self.in_reply_to,
                "parts": self.part_map.to_list(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> MessageInfo:
        d = json.loads(text)
        return cls(
            envelope=d["envelope"].encode("latin-1"),
            body=d["body"].encode("latin-1"),
            bodystructure=d["bodystructure"].encode("latin-1"),
            header_len=d["header_len"],
            size=d["size"],
            date_sent=datetime.fromisoformat(d["date_sent"]) if d["date_sent"] else None,
            subject=d["subject"],
            from_=d["from"],
            to=d["to"],
            cc=d["cc"],
            bcc=d["bcc"],
            message_id=d["message_id"],
            in_reply_to=d["in_reply_to"],
            part_map=mime.Part.from_list(d["parts"]),
        )


def _nstr(value: bytes | None) -> bytes | None:
    return None if value is None else mime.nolf(value)


def _params_value(params: list[tuple[bytes, bytes]], text: bool) -> list | None:
    flat: list[bytes] = [x for kv in params for x in kv]
    if text and not any(k.lower() == b"charset" for k, _ in params):
        flat += [b"charset", b"us-ascii"]
    return flat or None


def _ext_common(c: dict[bytes, bytes | list]) -> list:
    disp = c.get(b"disposition")
    dparams = c.get(b"disposition-params") or None
    return [
        None if disp is None else [disp, dparams],
        c.get(b"language"),
        _nstr(c.get(b"location")),  # type: ignore[arg-type]
    ]


_EMPTY_BODY = [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0]


def structure_value(node: mime.Node, raw: bytes, extended: bool, root: bool = False) -> list:
    """BODY (extended=False) or BODYSTRUCTURE of a part, as values for wire.encode()."""
    part = node.part
    c = mime.content_fields(node)
    if part.kind == mime.MULTIPART:
        kids: list = [structure_value(k, raw, extended) for k in node.nodes]
        if not kids:
            kids = [_EMPTY_BODY + ([None] * 4 if extended else [])]
        # body-type-mpart = 1*body SP media-subtype: the bodies follow each other with
        # no space between them (RFC 3501 section 9)
        out = [Raw(b"".join(encode(k) for k in kids)), node.sub]
        if extended:
            out += [_params_value(node.params, False)] + _ext_common(c)
        return out
    if part.kind == mime.MESSAGE:
        main, sub, text = b"message", b"rfc822", False
    elif node.main is None:
        main, sub, text = b"text", b"plain", True
    else:
        main, sub = node.main, node.sub
        text = main.lower() == b"text"
    size = part.end - part.body
    out: list
    if root and _plain_7bit(node, c, text):
        return [
            b"text",
            b"plain",
            [b"charset", b"us-ascii"],
            None,
            None,
            b"7bit",
            size,
            raw.count(b"\n", part.body, part.end),
        ] + ([None] * 4 if extended else [])
    out = [
        main,
        sub,
        _params_value(node.params, text),
        _nstr(c.get(b"id")),  # type: ignore[arg-type]
        _nstr(c.get(b"description")),  # type: ignore[arg-type]
        c.get(b"transfer-encoding", b"7bit"),
        size,
    ]
    if text:
        out.append(raw.count(b"\n", part.body, part.end))
    elif part.kind == mime.MESSAGE:
        inner = node.nodes[0]
        out.append(envelope_value(inner))
        out.append(structure_value(inner, raw, extended))
        out.append(raw.count(b"\n", part.body, part.end))
    if extended:
        out.append(_nstr(c.get(b"md5")))  # type: ignore[arg-type]
        out += _ext_common(c)
    return out


def _plain_7bit(node: mime.Node, c: dict, text: bool) -> bool:
    """Dovecot caches a top-level plain 7-bit US-ASCII text part as a flag and answers
    with the canonical lower-case form; do the same so the answers compare equal."""
    if not text or node.part.kind != mime.LEAF:
        return False
    if node.main is not None and node.sub.lower() != b"plain":
        return False
    if (
        len(node.params) > 1
        or node.params
        and (node.params[0][0].lower() != b"charset" or node.params[0][1].lower() != b"us-ascii")
    ):
        return False
    if b"id" in c or b"description" in c:
        return False
    cte = c.get(b"transfer-encoding")
    if cte is not None and cte.lower() != b"7bit":  # type: ignore[union-attr]
        return False
    return not any(k in c for k in (b"md5", b"disposition", b"language", b"location"))


def envelope_value(node: mime.Node) -> list:
    """ENVELOPE of a message's header, as values for wire.encode()."""
    v = mime.envelope_values(node)

    def addrs(value: bytes | None) -> list | None:
        if value is None:
            return None
        got = mime.parse_addresses(value)
        if not got:
            return None
        return [[None if a[0] is None else mime.for_humans(a[0]), a[1], a[2], a[3]] for a in got]

    frm = addrs(v[2])
    sender = addrs(v[3])
    reply_to = addrs(v[4])
    return [
        _nstr(v[0]),
        None if v[1] is None else mime.for_humans(v[1]),
        frm,
        sender if sender is not None else frm,
        reply_to if reply_to is not None else frm,
        addrs(v[5]),
        addrs(v[6]),
        addrs(v[7]),
        _nstr(v[8]),
        _nstr(v[9]),
    ]


def analyze(raw: bytes) -> MessageInfo:
    """Parse a stored message once: wire ENVELOPE/BODY/BODYSTRUCTURE, part map, SEARCH data.

    Never raises: a message the parser fails on (a bug, or input nobody foresaw) is
    described as one opaque text part with what its header gives, and the failure is
    logged here, once (the store keeps the result). One bad message must not make FETCH
    and SEARCH fail for every message of its folder."""
    try:
        return _analyze(raw)
    except Exception:  # noqa: BLE001 - contained to this message, see above
        log.warning(
            "MIME analysis failed for a message of %d octets; it is served as one opaque part",
            len(raw),
            exc_info=True,
        )
        return _opaque(raw)


def _opaque(raw: bytes) -> MessageInfo:
    """A message as one text/plain body after its header, envelope from the header if
    that much can be read."""
    end = mime.header_end(raw)
    part = mime.Part(0, end, len(raw))
    size = len(raw) - end
    lines = raw.count(b"\n", end)
    body = [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", size, lines]
    envelope = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    subject = ""
    try:
        node = mime.Node(part, mime.header_fields(raw, 0, end))
        envelope = encode(envelope_value(node))
        value = mime.envelope_values(node)[1]
        subject = "" if value is None else mime.decode_words(value).strip()
    except Exception:  # noqa: BLE001 - the header too is beyond us: NIL envelope
        pass
    return MessageInfo(
        envelope=envelope,
        body=encode(body),
        bodystructure=encode(body + [None] * 4),
        header_len=end,
        size=len(raw),
        date_sent=None,
        subject=subject,
        from_="",
        to="",
        cc="",
        bcc="",
        message_id="",
        in_reply_to="",
        part_map=part,
    )


def _analyze(raw: bytes) -> MessageInfo:
    root = mime.parse(raw)
    vals = mime.envelope_values(root)

    def text(i: int) -> str:
        value = vals[i]
        return "" if value is None else mime.decode_words(value).strip()

    def addresses(i: int) -> str:
        value = vals[i]
        return "" if value is None else mime.address_search_text(value)

    return MessageInfo(
        envelope=encode(envelope_value(root)),
        body=encode(structure_value(root, raw, False, root=True)),
        bodystructure=encode(structure_value(root, raw, True, root=True)),
        header_len=root.part.body,
        size=len(raw),
        date_sent=mime.parse_date(vals[0]),
        subject=text(1),
        from_=addresses(2),
        to=addresses(5),
        cc=addresses(6),
        bcc=addresses(7),
        message_id=mime.collapse(mime.nolf(vals[9] or b"")).decode("utf-8", "replace"),
        in_reply_to=mime.collapse(mime.nolf(vals[8] or b"")).decode("utf-8", "replace"),
        part_map=root.part,
    )
