"""`mailctl init`: a new home with what a fresh Exchange install has, plus a demo mailbox."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from mailctl.cli import WhatIfOpt, command, fail, home


def port_plan(base_port: int | None):  # -> PortPlan (imported lazily with the models)
    """Exchange's ports when root and no base is given; else shifted by the base (10000 by
    default for other users, who may not bind below 1024), listening on loopback only."""
    from server.settings.models import PortPlan

    if base_port is None and os.geteuid() == 0:
        return PortPlan()
    return PortPlan.shifted(10000 if base_port is None else base_port, loopback_only=True)


def loopback_note(srv) -> str | None:  # srv: server.settings.models.Server
    """A sentence when every POP3/IMAP4 listener is on loopback (the non-root default and
    --base-port): clients on other machines cannot connect until the bindings change."""
    import ipaddress

    eps = [
        ep
        for ps in (srv.ImapSettings, srv.PopSettings)
        for ep in (*ps.SSLBindings, *ps.UnencryptedOrTLSBindings)
    ]
    if not eps or not all(ipaddress.ip_address(ep.address).is_loopback for ep in eps):
        return None
    ssl = srv.ImapSettings.SSLBindings[0].port if srv.ImapSettings.SSLBindings else 993
    return (
        f"Listening on {eps[0].address} only: clients on other machines cannot connect. To "
        f"accept them, bind all addresses, e.g. `mailctl Set-ImapSettings -SSLBindings "
        f"0.0.0.0:{ssl}` (likewise -UnencryptedOrTLSBindings, Set-PopSettings, "
        f"Set-ReceiveConnector -Bindings)."
    )


@command("Init")
def init(
    server: Annotated[str, typer.Option("--server", help="Name of the first server.")] = "MBX01",
    domain: Annotated[
        str, typer.Option("--domain", help="The accepted domain addresses are made in.")
    ] = "contoso.test",
    fqdn: Annotated[
        str | None, typer.Option("--fqdn", help="The server's FQDN (default: server.domain).")
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            help="Shift every port by this much (143 -> base+143). Default: Exchange's ports "
            "for root, 10000 for other users.",
        ),
    ] = None,
    demo_password: Annotated[
        str | None,
        typer.Option(
            "--demo-password", help="Password of the demo mailbox (default: random, printed once)."
        ),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Create the mailbox `demo`.")
    ] = True,
    what_if: WhatIfOpt = False,
) -> None:
    """Create a home folder: one server, its default connectors, all POP/IMAP services
    Manual, and a demo mailbox. On an existing home it changes nothing and says so."""
    from pydantic import ValidationError

    from server.directory import Directory
    from server.settings import store
    from server.settings.models import Mailbox, default_settings

    where = home()
    if where.settings_file.exists():
        print(f"{where.settings_file} exists already; nothing changed.")
        return
    if base_port is not None and not 0 <= base_port <= 65535 - 2000:
        fail(f"--base-port {base_port} is out of range", allowed=f"0 to {65535 - 2000}")
    try:
        settings = default_settings(
            server=server, domain=domain, fqdn=fqdn, ports=port_plan(base_port)
        )
        if demo:
            settings.Mailboxes["demo"] = Mailbox(
                DisplayName="Demo User", PrimarySmtpAddress=f"demo@{domain}", Server=server
            )
            settings = type(settings).model_validate(settings.model_dump())
    except ValidationError as exc:
        from mailctl.cli import validation_message

        fail("init: " + validation_message(exc, lambda f: f"--{f.lower()}"))
    if what_if:
        srv = settings.Servers[server]
        print(
            f"What if: would create {where.settings_file} (server {server}, domain {domain}; "
            f"IMAP {srv.ImapSettings.SSLBindings[0]}, POP3 {srv.PopSettings.SSLBindings[0]})"
            + (", and the mailbox demo." if demo else ".")
        )
        return
    store.create(where, settings)
    print(f"Created {where.settings_file} (server {server}, domain {domain}).")
    srv = settings.Servers[server]
    print(
        f"IMAP {srv.ImapSettings.UnencryptedOrTLSBindings[0]} (STARTTLS) and "
        f"{srv.ImapSettings.SSLBindings[0]} (TLS); POP3 {srv.PopSettings.UnencryptedOrTLSBindings[0]}"
        f" and {srv.PopSettings.SSLBindings[0]}; services are Manual: `mailctl enable-imap4`."
    )
    note = loopback_note(srv)
    if note:
        print(note)
    if demo:
        password = demo_password or secrets.token_urlsafe(12)
        Directory(where).set_password("demo", password)
        shown = password if demo_password is None else "(as given)"
        print(f"Demo mailbox: demo@{domain}, password {shown}")
