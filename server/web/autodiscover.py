"""Outlook autodiscover, the plain-old-XML flavour (POST /autodiscover/autodiscover.xml).

The request names an address and the response schema it accepts; we answer the Outlook
"responseschema/2006a" with an `email` account holding one Protocol per published setting
(IMAP, POP3, SMTP). Unknown addresses get the same answer as known ones (LoginName is the
address given), so autodiscover cannot be used to probe for accounts. A malformed request,
or one asking for another schema, gets Exchange's error 600 "Invalid Request".
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..settings.published import Endpoint
from .view import ClientView

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


def parse_request(body: bytes) -> AutodiscoverRequest:
    """The address and schema of a POX request; InvalidRequest otherwise. DTDs and entities
    are refused before parsing (expat would expand internal entities)."""
    if len(body) > MAX_REQUEST or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise InvalidRequest("request too large or has a DTD")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise InvalidRequest(str(exc)) from None
    if root.tag != f"{{{REQUEST_NS}}}Autodiscover":
        raise InvalidRequest("not an Outlook autodiscover request")
    email = root.findtext(f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}EMailAddress")
    schema = root.findtext(
        f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}AcceptableResponseSchema"
    )
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
        response, "Error",
        Time=time.strftime("%H:%M:%S", time.gmtime()), Id=str(secrets.randbelow(10**10)),
    )
    ET.SubElement(error, "ErrorCode").text = str(code)
    ET.SubElement(error, "Message").text = message
    ET.SubElement(error, "DebugData")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
