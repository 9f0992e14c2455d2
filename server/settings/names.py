"""Service names and display names: a module without pydantic, so mailctl's fast path
(get-service) can use them; server.settings.models re-exports them."""

from __future__ import annotations

IMAP4 = "MSExchangeIMAP4"
IMAP4BE = "MSExchangeIMAP4BE"
POP3 = "MSExchangePOP3"
POP3BE = "MSExchangePOP3BE"
SUBMISSION = "MSExchangeFrontEndTransport"
WEB = "W3SVC"
DELIVERY = "MSExchangeDelivery"  # Mailbox Transport Delivery: LMTP into this server's store
# Mailbox Replication Service: runs the moves into this server, serves moves out of it.
REPLICATION = "MSExchangeMailboxReplication"
# Copies the organization's settings from the directory when it spans hosts (server/topology)
TOPOLOGY = "MSExchangeADTopology"

SERVICE_DISPLAY_NAMES = {
    IMAP4: "Microsoft Exchange IMAP4",
    IMAP4BE: "Microsoft Exchange IMAP4 Backend",
    POP3: "Microsoft Exchange POP3",
    POP3BE: "Microsoft Exchange POP3 Backend",
    SUBMISSION: "Microsoft Exchange Frontend Transport",
    WEB: "World Wide Web Publishing Service",
    DELIVERY: "Microsoft Exchange Mailbox Transport Delivery",
    REPLICATION: "Microsoft Exchange Mailbox Replication",
    TOPOLOGY: "Microsoft Exchange Active Directory Topology",
}
SERVICE_NAMES = tuple(SERVICE_DISPLAY_NAMES)


def default_startup(service: str) -> str:
    # POP3 and IMAP4 are off after install (reference section 5); transport, delivery and
    # web run, and so does mailbox replication, as in Exchange.
    return "Automatic" if service in (SUBMISSION, WEB, DELIVERY, REPLICATION) else "Manual"
