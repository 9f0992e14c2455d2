"""Helpers for the tests that submit mail over SMTP and look for it in the store: the client
connector's port and settings, a logged-in client, a message, an INBOX's contents."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

from server.settings import store
from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import PASSWORD, client_context, save

CONNECTOR = "Client Frontend MBX01"


def connector_port(home: Home) -> int:
    settings = store.load(home).settings
    return settings.ReceiveConnectors[CONNECTOR].Bindings[0].port


def set_connector(home: Home, **changes: Any) -> None:
    settings = store.load(home).settings
    connector = settings.ReceiveConnectors[CONNECTOR]
    for key, value in changes.items():
        setattr(connector, key, value)
    save(home, settings)


def login(home: Home, user: str = "bob") -> smtplib.SMTP:
    """A client on the client connector, after STARTTLS and AUTH as `user`."""
    client = smtplib.SMTP("127.0.0.1", connector_port(home), timeout=10)
    client.starttls(context=client_context(home))
    client.login(user, PASSWORD)
    return client


def message(sender: str, to: str, subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("Hi there.\n")
    return msg


def inbox(home: Home, mailbox: str, server: str = "MBX01") -> list[bytes]:
    """The messages in the mailbox's INBOX, oldest first, read from the store itself."""
    mail = open_store(home, server)
    try:
        box = mail.mailbox(mailbox)
        return [box.read("INBOX", row.uid) for row in box.snapshot("INBOX").rows]
    finally:
        mail.close()
