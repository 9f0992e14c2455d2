"""What users are told to configure: POP, IMAP and SMTP server name, port and encryption
(the OWA page "Settings for POP or IMAP access", reference section 6).

POP and IMAP come from a server's ExternalConnectionSettings (or InternalConnectionSettings
for internal clients); when both an SSL and a TLS entry exist only the SSL one is shown.
SMTP comes from a receive connector with AdvertiseClientSettings $true: its Fqdn, the port of
its first binding, and TLS when the connector offers it. Nothing set -> None ("not published").
Used by `mailctl get-connectionsettings` and the web service (settings page, autoconfig).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from server.settings.models import ReceiveConnector, Settings
from server.settings.types import AuthMechanism, ConnectionSetting, Encryption


@dataclass(frozen=True)
class Endpoint:
    Server: str
    Port: int
    Encryption: str  # "SSL", "TLS" or "None"


@dataclass(frozen=True)
class Published:
    POP: Endpoint | None
    IMAP: Endpoint | None
    SMTP: Endpoint | None

    def as_dict(self) -> dict[str, dict[str, object] | None]:
        return {
            k: (asdict(v) if v else None)
            for k, v in (("POP", self.POP), ("IMAP", self.IMAP), ("SMTP", self.SMTP))
        }


def pick(entries: list[ConnectionSetting]) -> Endpoint | None:
    """SSL wins over TLS, TLS over unencrypted; first of a kind wins."""
    for wanted in (Encryption.SSL, Encryption.TLS, None):
        for entry in entries:
            if entry.encryption is wanted:
                return Endpoint(entry.hostname, entry.port, wanted.value if wanted else "None")
    return None


def smtp_endpoint(settings: Settings, server: str | None) -> Endpoint | None:
    """The advertised client-submission connector: one on `server` first, else any."""
    advertised = [
        (name, conn)
        for name, conn in settings.ReceiveConnectors.items()
        if conn.AdvertiseClientSettings and conn.Enabled and conn.Bindings
    ]
    if server:
        advertised.sort(key=lambda item: item[1].Server.lower() != server.lower())
    if not advertised:
        return None
    return connector_endpoint(advertised[0][1])


def connector_endpoint(conn: ReceiveConnector) -> Endpoint:
    tls = AuthMechanism.Tls in conn.AuthMechanism
    return Endpoint(conn.Fqdn, conn.Bindings[0].port, "TLS" if tls else "None")


def published(
    settings: Settings,
    mailbox: str | None = None,
    server: str | None = None,
    scope: Literal["External", "Internal"] = "External",
) -> Published:
    """What the user of `mailbox` (or of `server`, default the first) is shown. Raises
    KeyError for an unknown mailbox or server."""
    if mailbox is not None:
        found = settings.mailbox(mailbox)
        if found is None:
            raise KeyError(mailbox)
        server = found[1].Server
    name = settings.server_name(server) if server else next(iter(settings.Servers))
    srv = settings.Servers[name]
    field = f"{scope}ConnectionSettings"
    return Published(
        POP=pick(getattr(srv.PopSettings, field)),
        IMAP=pick(getattr(srv.ImapSettings, field)),
        SMTP=smtp_endpoint(settings, name),
    )
