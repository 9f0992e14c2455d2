"""Outlook autodiscover, the plain-old-XML flavour (POST /autodiscover/autodiscover.xml).

The request names an address and the response schema it accepts; we answer the Outlook
"responseschema/2006a" with an `email` account holding one Protocol per published setting
(IMAP, POP3, SMTP). Unknown addresses get the same answer as known ones (LoginName is the
address given), so autodiscover cannot be used to probe for accounts. A malformed request,
or one asking for another schema, gets Exchange's error 600 "Invalid Request".
"""

from __future__ import annotations

import codecs
import re
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from server.settings.published import Endpoint
from server.web.view import ClientView

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MAX_REQUEST = 16 * 1024


@dataclass(frozen=True)
class AutodiscoverRequest:
    email: str
    schema: str


class InvalidRequest(ValueError):
    pass


class UnreadableRequest(InvalidRequest):
    """Not XML we will parse at all (undecodable, a DTD, too large): HTTP 400."""


# XML 1.0 appendix F: the first bytes tell the encoding family before any declaration.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SNIFF = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)
_DECLARATION = re.compile(r"""\A\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ALLOWED = {
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "latin-1",
    "latin1",
    "windows-1252",
    "cp1252",
    "utf-16",
    "utf-16le",
    "utf-16be",
    "utf-32",
    "utf-32le",
    "utf-32be",
}


def decode_xml(body: bytes) -> str:
    """The request as text, whatever its encoding (BOM, then the first bytes, then the XML
    declaration, else UTF-8), so every check below sees what the parser will see: a DTD
    hidden in UTF-16 is still a DTD. UnreadableRequest when it does not decode."""
    encoding = next((name for bom, name in _BOMS if body.startswith(bom)), None)
    if encoding is None:
        encoding = next((name for head, name in _SNIFF if body.startswith(head)), None)
    try:
        if encoding is None:
            declared = _DECLARATION.match(body[:200].decode("latin-1"))
            encoding = declared.group(1).lower() if declared else "utf-8"
            if encoding not in _ALLOWED:
                raise UnreadableRequest(f"encoding {encoding!r} is not accepted")
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise UnreadableRequest(f"the request is not valid {encoding}") from None


def parse_request(body: bytes) -> AutodiscoverRequest:
    """The address and schema of a POX request; InvalidRequest otherwise. The body is
    decoded first; DTDs, entity declarations and processing instructions are then refused
    in the text, and what is parsed is plain UTF-8 without a declaration (expat would
    expand internal entities, and would read the declaration's encoding itself)."""
    if len(body) > MAX_REQUEST:
        raise UnreadableRequest("request too large")
    text = decode_xml(body)
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise UnreadableRequest("the request has a DTD")
    text = re.sub(r"\A\s*<\?xml[^>]*\?>", "", text)
    if "<?" in text or "<!" in text.replace("<!--", ""):
        raise UnreadableRequest("the request has processing instructions or declarations")
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        raise InvalidRequest(str(exc)) from None
    if root.tag != f"{{{REQUEST_NS}}}Autodiscover":
        raise InvalidRequest("not an Outlook autodiscover request")
    email = root.findtext(f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}EMailAddress")
    schema = root.findtext(f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}AcceptableResponseSchema")
    if not email or "@" not in email or not schema:
        raise InvalidRequest("EMailAddress and AcceptableResponseSchema are required")
    return AutodiscoverRequest(email.strip(), schema.strip())


def _flag(value: bool) -> str:
    return "on" if value else "off"


def _protocol(account: ET.Element, kind: str, endpoint: Endpoint, login: str) -> None:
    node = ET.SubElement(account, "Protocol")
    ET.SubElement(node, "Type").text = kind
    ET.SubElement(node, "Server").text = endpoint.Server
    ET.SubElement(node, "Port").text = str(endpoint.Port)
    ET.SubElement(node, "LoginName").text = login
    ET.SubElement(node, "DomainRequired").text = "off"
    ET.SubElement(node, "SPA").text = "off"
    # SSL on means "encrypt"; Encryption tells implicit TLS (SSL) from STARTTLS (TLS).
    ET.SubElement(node, "SSL").text = _flag(endpoint.Encryption != "None")
    ET.SubElement(node, "Encryption").text = endpoint.Encryption
    ET.SubElement(node, "AuthRequired").text = "on"
    if kind == "SMTP":
        ET.SubElement(node, "UsePOPAuth").text = "on"
        ET.SubElement(node, "SMTPLast").text = "off"


def response_xml(view: ClientView, request: AutodiscoverRequest) -> bytes:
    # Unqualified tags with literal xmlns attributes give the exact default-namespace
    # layout Outlook expects (ElementTree would invent ns0:/ns1: prefixes otherwise).
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    shown = view.shown
    for kind, endpoint in (("IMAP", shown.IMAP), ("POP3", shown.POP), ("SMTP", shown.SMTP)):
        if endpoint is not None:
            _protocol(account, kind, endpoint, request.email)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def error_xml(code: int = 600, message: str = "Invalid Request") -> bytes:
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response")
    error = ET.SubElement(
        response,
        "Error",
        Time=time.strftime("%H:%M:%S", time.gmtime()),
        Id=str(secrets.randbelow(10**10)),
    )
    ET.SubElement(error, "ErrorCode").text = str(code)
    ET.SubElement(error, "Message").text = message
    ET.SubElement(error, "DebugData")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
