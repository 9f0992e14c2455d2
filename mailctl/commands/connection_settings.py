"""Get-ConnectionSettings: what a user is told to configure (the OWA page "Settings for POP
or IMAP access"), derived by server.settings.published."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..cli import OutputOpt, ServerOpt, command, emit, fail, load_settings, local_server

NOT_PUBLISHED = "not published"


@command("Get-ConnectionSettings", read=True)
def get_connectionsettings(
    identity: Annotated[
        str | None,
        typer.Argument(
            help="A mailbox: show what its user is shown (its server's settings).",
            show_default=False,
        ),
    ] = None,
    server: ServerOpt = None,
    internal: Annotated[
        bool, typer.Option("--internal", help="InternalConnectionSettings instead of external.")
    ] = False,
    output: OutputOpt = "table",
) -> None:
    """POP, IMAP and SMTP server name, port and encryption as users are shown them.
    JSON: an array of {Protocol, Server, Port, Encryption}; Server null = not published."""
    from server.settings.published import published

    settings = load_settings()
    if identity is None:
        server = local_server(settings, server)[0]
    try:
        shown = published(settings, identity, server, "Internal" if internal else "External")
    except KeyError as exc:
        fail(f"there is no mailbox {exc.args[0]!r}", code=1)
    rows: list[dict[str, Any]] = []
    for protocol, endpoint in shown.as_dict().items():
        rows.append(
            {
                "Protocol": protocol,
                **(endpoint or {"Server": None, "Port": None, "Encryption": None}),
            }
        )
    if output.lower() != "json":
        rows = [
            {k: (NOT_PUBLISHED if k == "Server" and v is None else v) for k, v in r.items()}
            for r in rows
        ]
    emit(rows, output, columns=["Protocol", "Server", "Port", "Encryption"])
