"""What read commands show, computed from the settings as plain JSON data (the dump of the
validated model). Free of pydantic, so the fast path (mailctl.fast) and the full command line
produce byte-identical JSON from the same functions."""

from __future__ import annotations

import fnmatch
import os
from typing import Any

PROTOCOLS = {"pop": "PopSettings", "imap": "ImapSettings"}


def pick_server(servers: dict[str, Any], wanted: str | None) -> str | None:
    """The key of server `wanted` (case-insensitive), else the local server: MAILCTL_SERVER,
    the only server, the one whose FQDN is this host's, or the first. None if `wanted` is
    not a server. `servers` maps name -> object with a `Fqdn` (dict or model)."""
    wanted = wanted or os.environ.get("MAILCTL_SERVER")
    if wanted:
        # -Server takes the name or the FQDN, as Exchange's ServerIdParameter does.
        key = wanted.lower().rstrip(".")
        for name, srv in servers.items():
            fqdn = srv["Fqdn"] if isinstance(srv, dict) else srv.Fqdn
            if key in (name.lower(), fqdn.lower()):
                return name
        return None
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


def _field(obj: Any, key: str) -> Any:
    """A property of a dumped object (dict) or of a model: the views take either."""
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


# --------------------------------------------------------------------------- receive connectors

CONNECTOR_COLUMNS = ["Identity", "Bindings", "Enabled", "AdvertiseClientSettings", "Fqdn", "Served"]
NOT_SERVED_HUB = (
    "No: HubTransport connectors are not served here (the front end delivers "
    "itself); its settings have no effect"
)


def connector_served(conn: dict[str, Any]) -> str:
    """Whether MSExchangeFrontEndTransport serves a (dumped) receive connector."""
    if conn.get("TransportRole") != "FrontendTransport":
        return NOT_SERVED_HUB
    return "Yes" if conn.get("Enabled") else "No: disabled"


def find_connectors(
    connectors: dict[str, Any], identity: str | None, server: str | None
) -> list[str]:
    """Connector names matching `identity` (name or Server\\Name, * wildcards), on `server`."""
    wanted_server = server
    pattern = identity or "*"
    if "\\" in pattern:
        wanted_server, pattern = pattern.split("\\", 1)
    found = []
    for name, conn in connectors.items():
        if wanted_server and _field(conn, "Server").lower() != wanted_server.lower():
            continue
        if fnmatch.fnmatchcase(name.lower(), pattern.lower()):
            found.append(name)
    return found


def connector_rows(dump: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        conn = dump["ReceiveConnectors"][name]
        rows.append(
            {
                "Identity": f"{conn['Server']}\\{name}",
                "Name": name,
                **conn,
                "Served": connector_served(conn),
            }
        )
    return rows


# --------------------------------------------------------------------------- mailboxes

MAILBOX_FIELDS = ["DisplayName", "PrimarySmtpAddress", "EmailAddresses", "Type", "Server"]
MAILBOX_COLUMNS = ["Name", "PrimarySmtpAddress", "Server", "Type"]
CAS_COLUMNS = [
    "Name",
    "PopEnabled",
    "ImapEnabled",
    "PopUseProtocolDefaults",
    "ImapUseProtocolDefaults",
]


def find_mailbox(mailboxes: dict[str, Any], identity: str) -> str | None:
    """The mailbox named `identity`, or with it as an address, or `domain\\name`
    (case-insensitive) - what Settings.mailbox finds, on the dump."""
    wanted = identity.strip().lower().rsplit("\\", 1)[-1]
    for name, box in mailboxes.items():
        addresses = [_field(box, "PrimarySmtpAddress"), *_field(box, "EmailAddresses")]
        if name.lower() == wanted or wanted in (a.lower() for a in addresses):
            return name
    return None


def match_mailboxes(mailboxes: dict[str, Any], identity: str | None) -> list[str]:
    """Every mailbox; those whose name or primary address matches a * / ? pattern; or one."""
    if identity is None:
        return list(mailboxes)
    if any(c in identity for c in "*?"):
        pattern = identity.lower()
        return [
            name
            for name, box in mailboxes.items()
            if fnmatch.fnmatchcase(name.lower(), pattern)
            or fnmatch.fnmatchcase(_field(box, "PrimarySmtpAddress").lower(), pattern)
        ]
    found = find_mailbox(mailboxes, identity)
    return [found] if found else []


def directory_row(dump: dict[str, Any]) -> dict[str, Any]:
    """Get-ADServerSettings: where the mailboxes live, and the [Directory] settings."""
    config = dump.get("Directory") or {}
    if not config.get("Uri"):
        return {"DirectoryType": "File", "Uri": None}
    row = {"DirectoryType": "LDAP", **{k: v for k, v in config.items() if k != "Mapping"}}
    row.update({f"Mapping.{k}": v for k, v in (config.get("Mapping") or {}).items()})
    return row


def mailbox_rows(dump: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    boxes = dump["Mailboxes"]
    return [{"Identity": n, "Name": n, **{k: boxes[n][k] for k in MAILBOX_FIELDS}} for n in names]


def cas_rows(dump: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    boxes = dump["Mailboxes"]
    return [
        {
            "Identity": n,
            "Name": n,
            **{k: v for k, v in boxes[n].items() if k.startswith(("Pop", "Imap"))},
        }
        for n in names
    ]


# --------------------------------------------------------------------------- connection settings

CONNECTION_COLUMNS = ["Protocol", "Server", "Port", "Encryption"]
NOT_PUBLISHED = "not published"


def connection_rows(shown: dict[str, Any], for_json: bool) -> list[dict[str, Any]]:
    """get-connectionsettings: one row per protocol from Published.as_dict(); in JSON an
    unpublished endpoint is nulls, for people it says so."""
    rows = []
    for protocol, endpoint in shown.items():
        row = {"Protocol": protocol, **(endpoint or dict.fromkeys(CONNECTION_COLUMNS[1:]))}
        if not for_json and row["Server"] is None:
            row["Server"] = NOT_PUBLISHED
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- get-service

SERVICE_COLUMNS = [
    "Status",
    "Name",
    "DisplayName",
    "StartupType",
    "Pid",
    "Uptime",
    "MemoryMB",
    "Connections",
    "Endpoints",
    "SettingsVersion",
    "LastReload",
]


def _uptime(seconds: float | None) -> str | None:
    """Exchange's TimeSpan spelling, d.hh:mm:ss."""
    if seconds is None:
        return None
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (
        f"{days}.{hours:02}:{minutes:02}:{secs:02}"
        if days
        else f"{hours:02}:{minutes:02}:{secs:02}"
    )


def service_row(info: dict[str, Any]) -> dict[str, Any]:
    """A get-service row from control.ServiceInfo's fields (status.service_status)."""
    reload = info["LastReload"] or {}
    if not reload:
        last = None
    elif reload.get("Result") == "OK":
        last = "OK"
    else:
        last = f"Error: {reload.get('Error')}"
    return {
        "Status": info["Status"],
        "Name": info["Name"],
        "DisplayName": info["DisplayName"],
        "Server": info["Server"],
        "StartupType": info["StartupType"],
        "Pid": info["Pid"],
        "StartTime": info["StartTime"],
        "Uptime": _uptime(info["Uptime"]),
        "UptimeSeconds": info["Uptime"],
        "MemoryMB": round(info["MemoryRSS"] / 2**20, 1) if info["MemoryRSS"] is not None else None,
        "MemoryRSS": info["MemoryRSS"],
        "Connections": info["Connections"],
        "Endpoints": info["Endpoints"],
        "SettingsVersion": info["SettingsVersion"],
        "LastReload": last,
        "LastReloadLine": reload.get("Line"),
        "LastReloadTime": reload.get("Time"),
        "TooOpenPaths": info.get("TooOpenPaths") or [],
        "Workers": info.get("Workers") or [],
    }


# --------------------------------------------------------------------------- certificates


def certificate_row(
    thumbprint: str, subject: str, dns_names: list[str], not_after: str, services: list[str]
) -> dict[str, Any]:
    """A get-exchangecertificate row (server.runtime.tls's index entry)."""
    return {
        "Thumbprint": thumbprint,
        "Services": ", ".join(services) if services else "None",
        "Subject": f"CN={subject}",
        "CertificateDomains": list(dns_names),
        "NotAfter": not_after,
    }


# --------------------------------------------------------------------------- OWA virtual directory

OWA_NAME = "owa (Default Web Site)"
OWA_COLUMNS = [
    "Identity",
    "InternalUrl",
    "ExternalUrl",
    "Bindings",
    "SSLBindings",
    "InternalNetworks",
]


def owa_server(identity: str | None, server: str | None) -> str | None:
    """The server named by an Exchange virtual-directory Identity ("MBX01\\owa (Default Web
    Site)", "MBX01\\owa", "owa (Default Web Site)") and/or -Server; "" when neither names
    one (the local server), None when the Identity is not this virtual directory or the two
    disagree."""
    named = ""
    if identity:
        host, sep, vdir = identity.strip().rpartition("\\")
        if vdir.strip().lower() not in (OWA_NAME.lower(), "owa"):
            return None
        named = host.strip() if sep else ""
        if sep and not named:
            return None
    if named and server and named.lower() != server.lower():
        return None
    return named or server or ""


def owa_row(dump: dict[str, Any], server: str) -> dict[str, Any]:
    """get-owavirtualdirectory: one object, its Identity in Exchange's form."""
    vdir = dump["Servers"][server].get("OwaVirtualDirectory") or {}
    return {
        "Identity": f"{server}\\{OWA_NAME}",
        "Server": server,
        "Name": OWA_NAME,
        "InternalUrl": vdir.get("InternalUrl"),
        "ExternalUrl": vdir.get("ExternalUrl"),
        "Bindings": vdir.get("Bindings", []),
        "SSLBindings": vdir.get("SSLBindings", []),
        "InternalNetworks": vdir.get("InternalNetworks", []),
    }


# --------------------------------------------------------------------------- mailbox statistics


def statistics_row(
    name: str, box: dict[str, Any], items: int, octets: int, limits: list[int | None]
) -> dict[str, Any]:
    """get-mailboxstatistics: one mailbox; `box` its dump, `limits` the quotas in force
    (warning, send, receive; None is Unlimited: server.store.quota.limits)."""
    from server.store.usage import exchange_size, storage_status

    def text(octets: int | None) -> str:
        return "Unlimited" if octets is None else exchange_size(octets)

    warning, send, receive = limits
    return {
        "Identity": name,
        "DisplayName": box.get("DisplayName") or name,
        "ItemCount": items,
        "TotalItemSize": exchange_size(octets),
        "StorageLimitStatus": storage_status(octets, warning, send, receive),
        "IssueWarningQuota": text(warning),
        "ProhibitSendQuota": text(send),
        "ProhibitSendReceiveQuota": text(receive),
        "ServerName": box["Server"],
        "Database": box["Server"],
    }


def move_row(request: dict[str, Any], boxes: dict[str, Any]) -> dict[str, Any]:
    """A move request (server/moves/request.py, as stored) as Get-MoveRequest and
    Get-MoveRequestStatistics show it; `boxes`: the settings' Mailboxes, dumped."""
    name = request["Identity"]
    box = boxes.get(name) or {}
    return {**request, "DisplayName": box.get("DisplayName") or name, "Alias": name}
