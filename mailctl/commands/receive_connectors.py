"""Get-/Set-ReceiveConnector (reference section 2): the client-submission connectors."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailctl import views
from mailctl.cli import (
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    command,
    edit_settings,
    emit,
    fail,
    load_settings,
    model_options,
    report_changes,
    require_values,
    update_fields,
)
from server.settings.models import ReceiveConnector, Settings

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
    return views.find_connectors(settings.ReceiveConnectors, identity, server)


@command("Get-ReceiveConnector", read=True)
def get_receiveconnector(
    identity: IdentityArg = None, server: ServerOpt = None, output: OutputOpt = "table"
) -> None:
    """Show receive connectors (all, or those matching Identity); Served says whether
    anything listens on one."""
    dump = load_settings().model_dump(mode="json")
    names = views.find_connectors(dump["ReceiveConnectors"], identity, server)
    if identity and not names:
        fail(
            f"there is no receive connector {identity!r}",
            allowed=", ".join(dump["ReceiveConnectors"]),
            code=1,
        )
    emit(views.connector_rows(dump, names), output, columns=views.CONNECTOR_COLUMNS)


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
    """Change a receive connector (e.g. -AdvertiseClientSettings '$true' -Fqdn mail.contoso.com).
    The HubTransport "Client Proxy" connectors are not served: changes to them have no effect
    here."""
    values = values or {}
    require_values(values, "Set-ReceiveConnector")
    with edit_settings(what_if) as session:
        settings = session.validate()
        names = find(settings, identity, None)
        if len(names) != 1:
            problem = "matches several connectors" if names else "is not a receive connector"
            fail(f"{identity!r} {problem}", allowed=", ".join(settings.ReceiveConnectors))
        name = names[0]
        current = settings.ReceiveConnectors[name]
        changes = update_fields(
            session,
            ("ReceiveConnectors", name),
            ReceiveConnector,
            current,
            values,
            "Set-ReceiveConnector",
        )
    report_changes(identity_of(name, current), changes, what_if)
    if changes and views.connector_served(current.model_dump(mode="json")) == views.NOT_SERVED_HUB:
        print(f"Note: {identity_of(name, current)} is not served: no effect here.")
        return
    for note in no_effect_notes(changes):
        print(f"Note: {note}")


# What the submission service does not act on (docs/cli.md says the same per parameter).
NO_EFFECT_VALUES = {
    "AuthMechanism": {"Integrated", "ExchangeServer", "ExternalAuthoritative"},
    "PermissionGroups": {"ExchangeServers", "ExchangeLegacyServers", "Partners", "Custom"},
}


def no_effect_notes(changes: dict[str, tuple[Any, Any]]) -> list[str]:
    notes = []
    for key, (_, new) in changes.items():
        if key == "Comment":
            notes.append("Comment is a note for admins: no effect here.")
        idle = NO_EFFECT_VALUES.get(key)
        if idle and isinstance(new, list):
            named = sorted({getattr(v, "value", str(v)) for v in new} & idle)
            if named:
                notes.append(f"{key} {', '.join(named)}: no effect here.")
    return notes
