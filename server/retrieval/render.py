"""MessageRetrievalMimeFormat: the message body in the format the administrator chose.

Only the *body slot* of a message changes: the leaf text part, multipart/alternative or
multipart/related that RFC 2046 puts first. Everything around it (multipart/mixed wrappers,
attachments, forwarded messages, a text/calendar alternative) is kept as it was, and so are
the top-level header fields. A message already in the wanted shape (TextOnly on a plain
message, HtmlAndTextAlternative on a plain+HTML alternative) comes back byte for byte.

Tnef is accepted and gives the message as received (BestBodyFormat): we never store MAPI
properties, so there is no TNEF to produce, and clients that asked for it read MIME anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage, Message, MIMEPart

from server.retrieval import textconv
from server.retrieval.mimeutil import (
    NEW_PART_POLICY,
    assemble,
    header_block,
    is_attachment,
    parse,
    strip_to_entity,
    text_of,
    text_part,
)
from server.settings.types import MimeTextFormat

BODY_SUBTYPES = ("plain", "html", "enriched")

#: The body variants each format delivers, in multipart/alternative order (simplest
#: first: RFC 2046 section 5.1.4 puts the preferred, richest one last).
WANTED: dict[MimeTextFormat, tuple[str, ...]] = {
    MimeTextFormat.TextOnly: ("plain",),
    MimeTextFormat.HtmlOnly: ("html",),
    MimeTextFormat.HtmlAndTextAlternative: ("plain", "html"),
    MimeTextFormat.TextEnrichedOnly: ("enriched",),
    MimeTextFormat.TextEnrichedAndTextAlternative: ("plain", "enriched"),
}

# Signed or encrypted content is delivered as received: changing it breaks the signature.
SEALED = frozenset({"multipart/signed", "multipart/encrypted", "application/pkcs7-mime"})

AS_RECEIVED = frozenset({MimeTextFormat.BestBodyFormat, MimeTextFormat.Tnef})


def changes_bytes(fmt: MimeTextFormat) -> bool:
    return fmt not in AS_RECEIVED


@dataclass
class _Slot:
    parent: MIMEPart | None  # the container holding the slot (None: the slot is the root)
    index: int
    variants: dict[str, MIMEPart] = field(default_factory=dict)  # subtype -> text part
    extras: list[MIMEPart] = field(default_factory=list)  # other alternatives (calendar)
    resources: list[MIMEPart] = field(default_factory=list)  # related parts (images)


def _body_subtype(part: MIMEPart) -> str | None:
    if part.get_content_maintype() != "text" or is_attachment(part):
        return None
    sub = part.get_content_subtype()
    return sub if sub in BODY_SUBTYPES else None


def _related_root(related: MIMEPart) -> tuple[int, MIMEPart] | None:
    parts = list(related.iter_parts())
    start = related.get_param("start")
    if isinstance(start, str):
        for i, part in enumerate(parts):
            if part.get("Content-ID", "").strip() == start.strip():
                return i, part
    return (0, parts[0]) if parts else None


def _fill_alternative(slot: _Slot, alternative: MIMEPart) -> None:
    for part in alternative.iter_parts():
        sub = _body_subtype(part)
        if part.get_content_type() == "multipart/related":
            found = _related_root(part)
            if found and _body_subtype(found[1]) == "html" and "html" not in slot.variants:
                slot.variants["html"] = found[1]
                slot.resources.extend(p for i, p in enumerate(part.iter_parts()) if i != found[0])
                continue
        if sub is not None and sub not in slot.variants:
            slot.variants[sub] = part
        else:
            slot.extras.append(part)


def _locate(msg: MIMEPart) -> _Slot | None:
    """Find the body slot: descend through the first part of multipart/mixed (and other
    non-alternative multiparts) until a text part, an alternative or a related."""
    parent: MIMEPart | None = None
    index = 0
    node = msg
    for _ in range(32):  # deeper nesting than this is not a body anyone reads
        ctype = node.get_content_type()
        if ctype in SEALED:
            return None
        if ctype == "multipart/alternative":
            slot = _Slot(parent, index)
            _fill_alternative(slot, node)
            return slot if slot.variants else None
        if ctype == "multipart/related":
            found = _related_root(node)
            if found is None:
                return None
            root_index, root = found
            resources = [p for i, p in enumerate(node.iter_parts()) if i != root_index]
            if root.get_content_type() == "multipart/alternative":
                slot = _Slot(parent, index, resources=resources)
                _fill_alternative(slot, root)
                return slot if slot.variants else None
            sub = _body_subtype(root)
            if sub is None:
                return None
            return _Slot(parent, index, variants={sub: root}, resources=resources)
        if node.get_content_maintype() == "multipart":
            parts = list(node.iter_parts())
            if not parts or is_attachment(parts[0]):
                return None
            parent, index, node = node, 0, parts[0]
            continue
        sub = _body_subtype(node)
        return _Slot(parent, index, variants={sub: node}) if sub else None
    return None


def _text(slot: _Slot, sub: str) -> str:
    return text_of(slot.variants[sub])


def _plain_from(slot: _Slot) -> str:
    if "html" in slot.variants:
        return textconv.html_to_text(_text(slot, "html"))
    return textconv.enriched_to_text(_text(slot, "enriched"))


def _html_from(slot: _Slot) -> str:
    if "plain" in slot.variants:
        return textconv.text_to_html(_text(slot, "plain"))
    return textconv.text_to_html(textconv.enriched_to_text(_text(slot, "enriched")))


def _enriched_from(slot: _Slot) -> str:
    if "plain" in slot.variants:
        return textconv.text_to_enriched(_text(slot, "plain"))
    return textconv.text_to_enriched(textconv.html_to_text(_text(slot, "html")))


_MAKERS = {"plain": _plain_from, "html": _html_from, "enriched": _enriched_from}


def _multipart(subtype: str, parts: list[MIMEPart]) -> MIMEPart:
    container = EmailMessage(policy=NEW_PART_POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    payload: list[Message | str] = list(parts)
    container.set_payload(payload)  # the generator picks a boundary that occurs in no part
    return container


def _new_body(slot: _Slot, wanted: tuple[str, ...]) -> MIMEPart:
    parts = []
    for sub in wanted:
        part = slot.variants.get(sub)
        if part is None:
            part = text_part(_MAKERS[sub](slot), sub)
        elif sub == "html" and slot.resources:
            part = _multipart("related", [part, *slot.resources])
        parts.append(part)
    parts.extend(slot.extras)
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    if slot.resources and "html" not in wanted:
        # Inline images of an HTML body nobody will see: still delivered, as attachments.
        body = _multipart("mixed", [body, *slot.resources])
    return body


def convert(raw: bytes, fmt: MimeTextFormat) -> bytes:
    """The message in format `fmt`; the stored bytes when nothing changes (as-received
    formats, no text body, already in that format). Never raises for a malformed message:
    what cannot be parsed is delivered as received."""
    wanted = WANTED.get(fmt)
    if wanted is None or header_block(raw) is None:
        return raw
    try:
        msg = parse(raw)
        slot = _locate(msg)
        if slot is None or set(slot.variants) == set(wanted):
            return raw
        body = _new_body(slot, wanted)
        if slot.parent is None:
            entity = body
        else:
            payload = slot.parent.get_payload()
            assert isinstance(payload, list)
            payload[slot.index] = body
            entity = strip_to_entity(msg)
        return assemble(raw, entity)
    except Exception:  # noqa: BLE001 - a retrieval must never fail over a body conversion
        return raw
