"""Get-/Set-OwaVirtualDirectory: the web service's listeners, the URLs calendar links and
autoconfig answers are built on, and (a mailctl extension) InternalNetworks, the client
networks shown the internal settings. Options are generated from the pydantic model."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from mailctl import views
from mailctl.cli import (
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    apply_updates,
    command,
    edit_settings,
    emit,
    fail,
    load_settings,
    local_server,
    model_options,
    report_changes,
    require_values,
    update_fields,
)
from server.settings.models import OwaVirtualDirectorySettings

CMDLET = "Set-OwaVirtualDirectory"
IdentityArg = Annotated[
    str | None,
    typer.Argument(
        help='"SERVER\\owa (Default Web Site)", "SERVER\\owa" or "owa (Default Web Site)".',
        show_default=False,
    ),
]


def server_of(identity: str | None, server: str | None) -> str | None:
    named = views.owa_server(identity, server)
    if named is None:
        fail(
            f"{identity!r} is not an OWA virtual directory (or names another server than "
            f"-Server {server})",
            allowed='"SERVER\\owa (Default Web Site)"',
            code=2,
        )
    return named or None


@command("Get-OwaVirtualDirectory", read=True)
def get_owavirtualdirectory(
    identity: IdentityArg = None, server: ServerOpt = None, output: OutputOpt = "table"
) -> None:
    """Show the OWA virtual directory of a server: InternalUrl, ExternalUrl, the W3SVC
    bindings and InternalNetworks (a mailctl extension)."""
    settings = load_settings()
    key, _ = local_server(settings, server_of(identity, server))
    emit(views.owa_row(settings.model_dump(mode="json"), key), output, columns=views.OWA_COLUMNS)


@command("Set-OwaVirtualDirectory", params=model_options(OwaVirtualDirectorySettings))
def set_owavirtualdirectory(
    identity: IdentityArg = None,
    server: ServerOpt = None,
    what_if: WhatIfOpt = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Change the OWA virtual directory of a server (e.g. -ExternalUrl
    https://mail.contoso.com/owa); the web service uses it without a restart.
    -InternalNetworks (CIDR networks counted as internal) is a mailctl extension."""
    values = dict(values or {})
    require_values(values, CMDLET)
    with edit_settings(what_if) as session:
        settings = session.validate()
        key, srv = local_server(settings, server_of(identity, server))
        current = srv.OwaVirtualDirectory
        new, _ = apply_updates(OwaVirtualDirectorySettings, current, values, CMDLET)
        for field in ("InternalUrl", "ExternalUrl"):
            if field in values:
                check_url(field, getattr(new, field))
        if "InternalNetworks" in values:
            values["InternalNetworks"] = networks(new.InternalNetworks)
        changes = update_fields(
            session,
            ("Servers", key, "OwaVirtualDirectory"),
            OwaVirtualDirectorySettings,
            current,
            values,
            CMDLET,
        )
    report_changes(f"{key}\\{views.OWA_NAME}", changes, what_if)


def check_url(field: str, url: str | None) -> None:
    """The model only checks the scheme; a link built on a URL with a space or no host name
    would be broken in every message that carries it."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
    except ValueError as exc:
        fail(f"{CMDLET}: -{field} {url}: {exc}", allowed="e.g. https://mail.contoso.com/owa")
    if not parts.hostname or any(c.isspace() for c in url) or not url.isprintable():
        fail(
            f"{CMDLET}: -{field} {url!r} is not a URL", allowed="e.g. https://mail.contoso.com/owa"
        )


def networks(entries: list[str]) -> list[str]:
    """InternalNetworks as CIDR networks in canonical form (10.1.2.3/8 -> 10.0.0.0/8)."""
    out = []
    for entry in entries:
        try:
            out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            fail(
                f"{CMDLET}: -InternalNetworks {entry!r} is not a network",
                allowed="CIDR networks, IPv4 or IPv6, e.g. {10.0.0.0/8,fd00::/8}",
            )
    return out
