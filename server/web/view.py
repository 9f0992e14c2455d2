"""What a web client is shown: published POP/IMAP/SMTP settings, internal or external.

"Internal" is decided only by the client's address as the web service sees it (the TCP peer;
X-Forwarded-For is not trusted): when it falls in one of the server's
OwaVirtualDirectory.InternalNetworks (CIDR, IPv4 or IPv6; an IPv4-mapped IPv6 peer counts as
its IPv4 address), InternalConnectionSettings are shown, falling back per protocol to
ExternalConnectionSettings where nothing internal is set. Everyone else sees only
ExternalConnectionSettings. SMTP is the AdvertiseClientSettings connector in both cases.

The single-entry view (the page, autodiscover's first choice) is
server.settings.published.published; autoconfig also lists the other advertised entries.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from functools import lru_cache

from server.settings.models import Settings
from server.settings.published import Endpoint, Published, published, smtp_endpoint
from server.settings.types import ConnectionSetting, Encryption

log = logging.getLogger("mailctl.web")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...]) -> tuple[_Network, ...]:
    nets: list[_Network] = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            # A typo must not make everyone "internal" or stop the page: skip it, say so once.
            log.warning("event=bad_internal_network value=%r", entry)
    return tuple(nets)


def is_internal(internal_networks: list[str], remote: str | None) -> bool:
    """True when `remote` (an IP address string) is in one of the CIDR networks."""
    if not remote or not internal_networks:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        address.version == net.version and address in net
        for net in _networks(tuple(internal_networks))
    )


@dataclass(frozen=True)
class ClientView:
    """The settings one client is shown; `*_all` are every advertised entry, best first."""

    shown: Published
    internal: bool
    pop_all: list[Endpoint] = field(default_factory=list)
    imap_all: list[Endpoint] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return any((self.shown.POP, self.shown.IMAP, self.shown.SMTP))


def ordered(entries: list[ConnectionSetting]) -> list[Endpoint]:
    """SSL entries first, then TLS, then unencrypted; the admin's order within a kind."""
    rank = {Encryption.SSL: 0, Encryption.TLS: 1, None: 2}
    return [
        Endpoint(e.hostname, e.port, e.encryption.value if e.encryption else "None")
        for e in sorted(entries, key=lambda e: rank[e.encryption])
    ]


def client_view(
    settings: Settings, server: str, internal: bool, mailbox: str | None = None
) -> ClientView:
    """What a client is shown. `mailbox` (a signed-in user) selects the server holding it,
    as `mailctl get-connectionsettings <mailbox>` does; without it, `server` (the web
    service's own server) is used, so anonymous answers never depend on who exists."""
    if mailbox is not None and settings.mailbox(mailbox) is not None:
        server = settings.mailbox(mailbox)[1].Server  # type: ignore[index]
    name = settings.server_name(server)
    srv = settings.Servers[name]
    external = published(settings, None, name, "External")
    pop_entries = list(srv.PopSettings.ExternalConnectionSettings)
    imap_entries = list(srv.ImapSettings.ExternalConnectionSettings)
    shown = external
    if internal:
        inner = published(settings, None, name, "Internal")
        shown = Published(
            POP=inner.POP or external.POP,
            IMAP=inner.IMAP or external.IMAP,
            SMTP=smtp_endpoint(settings, name),
        )
        pop_entries = list(srv.PopSettings.InternalConnectionSettings) or pop_entries
        imap_entries = list(srv.ImapSettings.InternalConnectionSettings) or imap_entries
    return ClientView(shown, internal, ordered(pop_entries), ordered(imap_entries))
