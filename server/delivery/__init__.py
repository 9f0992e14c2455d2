"""MSExchangeDelivery: LMTP into this server's mailboxes (service.py), and the client the
submission queue uses to reach it (client.py)."""
