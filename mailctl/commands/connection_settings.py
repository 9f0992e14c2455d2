"""Get-ConnectionSettings: what a user is told to configure (the OWA page "Settings for POP
or IMAP access"), derived by server.settings.published."""

from __future__ import annotations

from typing import Annotated

import typer

from mailctl import views
from mailctl.cli import OutputOpt, ServerOpt, command, emit, fail, load_settings, local_server


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
    rows = views.connection_rows(shown.as_dict(), for_json=output.lower() == "json")
    emit(rows, output, columns=views.CONNECTION_COLUMNS)
