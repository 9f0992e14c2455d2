"""Get-/Set-ReceiveConnector (reference section 2): the client-submission connectors."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

import typer

from server.settings.models import ReceiveConnector, Settings

from ..cli import (
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    apply_updates,
    command,
    edit_settings,
    emit,
    fail,
    load_settings,
    model_options,
    report_changes,
)

IdentityArg = Annotated[
    str | None,
    typer.Argument(
        help='Connector name or Server\\Name, e.g. "Client Frontend MBX01"; wildcards (*) in get.',
        show_default=False,
    ),
]


def identity_of(name: str, conn: ReceiveConnector) -> str:
    return f"{conn.Server}\\{name}"


def find(settings: Settings, identity: str | None, server: str | None) -> list[str]:
    """Connector names matching `identity` (name or Server\\Name, * wildcards)."""
    wanted_server = server
    pattern = identity or "*"
    if "\\" in pattern:
        wanted_server, pattern = pattern.split("\\", 1)
    found = []
    for name, conn in settings.ReceiveConnectors.items():
        if wanted_server and conn.Server.lower() != wanted_server.lower():
            continue
        if fnmatch.fnmatchcase(name.lower(), pattern.lower()):
            found.append(name)
    return found


def view(name: str, conn: ReceiveConnector) -> dict[str, Any]:
    return {"Identity": identity_of(name, conn), "Name": name, **conn.model_dump(mode="json")}


@command("Get-ReceiveConnector", read=True)
def get_receiveconnector(
    identity: IdentityArg = None, server: ServerOpt = None, output: OutputOpt = "table"
) -> None:
    """Show receive connectors (all, or those matching Identity)."""
    settings = load_settings()
    names = find(settings, identity, server)
    if identity and not names:
        fail(
            f"there is no receive connector {identity!r}",
            allowed=", ".join(settings.ReceiveConnectors),
            code=1,
        )
    rows = [view(n, settings.ReceiveConnectors[n]) for n in names]
    emit(
        rows, output, columns=["Identity", "Bindings", "Enabled", "AdvertiseClientSettings", "Fqdn"]
    )


@command(
    "Set-ReceiveConnector",
    params=model_options(ReceiveConnector, exclude=("Server", "TransportRole")),
)
def set_receiveconnector(
    identity: Annotated[
        str, typer.Argument(help='Connector name or Server\\Name, e.g. "Client Frontend MBX01".')
    ],
    what_if: WhatIfOpt = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Change a receive connector (e.g. -AdvertiseClientSettings $true -Fqdn mail.contoso.com)."""
    values = values or {}
    if not values:
        fail("Set-ReceiveConnector: give at least one parameter to change (see --help)")
    with edit_settings(what_if) as session:
        settings = session.validate()
        names = find(settings, identity, None)
        if len(names) != 1:
            problem = "matches several connectors" if names else "is not a receive connector"
            fail(f"{identity!r} {problem}", allowed=", ".join(settings.ReceiveConnectors))
        name = names[0]
        current = settings.ReceiveConnectors[name]
        new, changes = apply_updates(ReceiveConnector, current, values, "Set-ReceiveConnector")
        dumped = new.model_dump(mode="json")
        for field in changes:
            session.set(("ReceiveConnectors", name, field), dumped[field])
    report_changes(identity_of(name, current), changes, what_if)
