"""What read commands show, computed from the settings as plain JSON data (the dump of the
validated model). Free of pydantic, so the fast path (mailctl.fast) and the full command line
produce byte-identical JSON from the same functions."""

from __future__ import annotations

import os
from typing import Any

PROTOCOLS = {"pop": "PopSettings", "imap": "ImapSettings"}


def pick_server(servers: dict[str, Any], wanted: str | None) -> str | None:
    """The key of server `wanted` (case-insensitive), else the local server: MAILCTL_SERVER,
    the only server, the one whose FQDN is this host's, or the first. None if `wanted` is
    not a server. `servers` maps name -> object with a `Fqdn` (dict or model)."""
    wanted = wanted or os.environ.get("MAILCTL_SERVER")
    if wanted:
        return next((k for k in servers if k.lower() == wanted.lower()), None)
    if len(servers) > 1:
        import socket

        host = socket.getfqdn().lower()
        for key, srv in servers.items():
            fqdn = srv["Fqdn"] if isinstance(srv, dict) else srv.Fqdn
            if fqdn.lower() == host or key.lower() == host.split(".")[0]:
                return key
    return next(iter(servers), None)


def protocol_settings(dump: dict[str, Any], server: str, protocol: str) -> dict[str, Any]:
    """get-popsettings / get-imapsettings: the server's name, then every parameter."""
    return {"Server": server, **dump["Servers"][server][PROTOCOLS[protocol]]}
