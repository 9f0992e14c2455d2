"""MSExchangeMailboxReplication: mailbox moves between servers (docs/architecture.md, "Mailbox
moves")."""
