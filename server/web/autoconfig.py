"""Thunderbird autoconfig (clientConfig version 1.1) from the published settings.

Every advertised entry is listed, best first (SSL, then STARTTLS, then plain), so a client
that cannot reach the first tries the next. The user name is the address the user typed
(%EMAILADDRESS%): mailboxes log in with any of their addresses, and the answer must not tell
whether an address exists.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from server.settings.published import Endpoint
from server.web.view import ClientView

SOCKET_TYPES = {"SSL": "SSL", "TLS": "STARTTLS", "None": "plain"}


def _server(parent: ET.Element, tag: str, kind: str, endpoint: Endpoint) -> ET.Element:
    node = ET.SubElement(parent, tag, type=kind)
    ET.SubElement(node, "hostname").text = endpoint.Server
    ET.SubElement(node, "port").text = str(endpoint.Port)
    ET.SubElement(node, "socketType").text = SOCKET_TYPES[endpoint.Encryption]
    ET.SubElement(node, "authentication").text = "password-cleartext"
    ET.SubElement(node, "username").text = "%EMAILADDRESS%"
    return node


def config_xml(view: ClientView, domain: str, display_name: str) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = display_name
    ET.SubElement(provider, "displayShortName").text = display_name
    # IMAP first: Thunderbird proposes the first incoming server it can reach.
    for endpoint in view.imap_all:
        _server(provider, "incomingServer", "imap", endpoint)
    for endpoint in view.pop_all:
        node = _server(provider, "incomingServer", "pop3", endpoint)
        pop3 = ET.SubElement(node, "pop3")
        ET.SubElement(pop3, "leaveMessagesOnServer").text = "true"
    if view.shown.SMTP is not None:
        _server(provider, "outgoingServer", "smtp", view.shown.SMTP)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
