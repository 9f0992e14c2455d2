"""The contract between the process runtime and each service.

`python -m server run NAME --server S --home H` (server/runtime/main.py) builds a
ServiceContext, instantiates the class registered for NAME (REGISTRY below), awaits
`start()`, then calls `reload()` on every valid settings change, `reload_certificates()`
when certs/certificates.json changes (New-/Import-/Enable-ExchangeCertificate) or on SIGHUP,
and `stop()` on SIGTERM.
A service owns its listeners (see listeners.ListenerSet) and its sessions; it never reads
settings.toml itself - it reads `ctx.settings`, which the runtime replaces on reload.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from server.settings.models import (
    DELIVERY,
    IMAP4,
    IMAP4BE,
    POP3,
    POP3BE,
    REPLICATION,
    SUBMISSION,
    WEB,
    Server,
    Settings,
)
from server.settings.names import TOPOLOGY
from server.settings.paths import Home

REGISTRY: dict[str, str] = {
    IMAP4BE: "server.backend.imap.server:ImapBackendService",
    POP3BE: "server.backend.pop3.server:Pop3BackendService",
    IMAP4: "server.frontend.imap:ImapFrontendService",
    POP3: "server.frontend.pop3:Pop3FrontendService",
    SUBMISSION: "server.submission.service:SubmissionService",
    WEB: "server.web.service:WebService",
    DELIVERY: "server.delivery.service:DeliveryService",
    REPLICATION: "server.moves.service:ReplicationService",
    TOPOLOGY: "server.topology.service:TopologyService",
}


@dataclass
class ServiceContext:
    name: str  # Exchange service name, e.g. MSExchangeIMAP4BE
    server: str  # the server of the organization this process runs for
    home: Home
    settings: Settings  # the settings in force; replaced (not mutated) on reload
    version: str = ""  # settings version in force
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mailctl"))
    # Which process of the service this is (0: the service process) and how many it runs
    # (server/runtime/workers.py).
    worker: int = 0
    workers: int = 1

    @property
    def server_settings(self) -> Server:
        return self.settings.server(self.server)


class Service(ABC):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @abstractmethod
    async def start(self) -> None:
        """Bind the listeners and get ready; raise with a clear message on failure.
        The runtime reports "ready" to `mailctl start-service` when this returns."""

    @abstractmethod
    async def reload(self, old: Settings, new: Settings) -> None:
        """Apply new settings (already validated and set on ctx.settings) without dropping
        a connection: rebind changed listeners, new limits for the next connection, etc."""

    @abstractmethod
    async def stop(self, grace: float) -> None:
        """Stop accepting, tell sessions goodbye (BYE / -ERR), wait up to `grace` seconds,
        then close whatever is left."""

    async def reload_certificates(self) -> None:
        """The certificates changed: pick the one to use again (tls.ensure_certificate) and
        load it into the live SSLContext (tls.reload_context) so new handshakes use it and
        established connections keep theirs. Services without TLS keep this no-op."""
        return

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a request that came on the control socket (server.runtime.status
        control_request) from another process of this server, e.g. a mailbox move's
        {"op": "end-sessions", "mailbox": name}. Services without requests refuse."""
        return {"error": f"{self.ctx.name} takes no control requests"}

    def status(self) -> dict[str, Any]:
        """What `get-service` shows besides process facts: at least
        {"connections": int, "endpoints": ["127.0.0.1:143", ...]}."""
        return {"connections": 0, "endpoints": []}


def load_service_class(name: str) -> type[Service]:
    module_name, _, class_name = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
