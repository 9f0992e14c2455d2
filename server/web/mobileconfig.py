"""An Apple configuration profile (.mobileconfig) with one mail account for the signed-in
user: IMAP when published, else POP. Unsigned (iOS and macOS install it after a warning);
the password is not included, the device asks for it."""

from __future__ import annotations

import plistlib
import uuid

from server.settings.published import Endpoint
from server.web.view import ClientView

CONTENT_TYPE = "application/x-apple-aspen-config"


def _stable_uuid(*parts: str) -> str:
    # The same profile for the same user and server keeps its UUIDs, so installing it again
    # replaces the old one instead of adding a second account.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailctl:" + ":".join(parts))).upper()


def _reverse_dns(domain: str) -> str:
    return ".".join(reversed(domain.lower().split(".")))


def profile(view: ClientView, address: str, display_name: str, domain: str) -> bytes | None:
    """The profile bytes, or None when neither IMAP nor POP (or no SMTP) is published."""
    incoming: Endpoint | None = view.shown.IMAP or view.shown.POP
    outgoing = view.shown.SMTP
    if incoming is None or outgoing is None:
        return None
    kind = "EmailTypeIMAP" if incoming is view.shown.IMAP else "EmailTypePOP"
    ident = f"{_reverse_dns(domain)}.mailctl"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail.{address.lower()}",
        "PayloadUUID": _stable_uuid("account", address.lower(), domain),
        "PayloadDisplayName": f"Mail ({address})",
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAccountType": kind,
        "EmailAddress": address,
        "IncomingMailServerHostName": incoming.Server,
        "IncomingMailServerPortNumber": incoming.Port,
        "IncomingMailServerUseSSL": incoming.Encryption != "None",
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": outgoing.Server,
        "OutgoingMailServerPortNumber": outgoing.Port,
        "OutgoingMailServerUseSSL": outgoing.Encryption != "None",
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": _stable_uuid("profile", address.lower(), domain),
        "PayloadDisplayName": f"{domain} mail",
        "PayloadDescription": f"Mail settings for {address}",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML)
