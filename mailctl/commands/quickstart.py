"""`mailctl run`: the quick start. One command from nothing to a working server.

It does what an admin would do by hand - `init` (when the home has no settings yet),
`enable-imap4`, `enable-pop3`, `start` - then prints what a mail client needs and stays in the
foreground until Ctrl-C (or SIGTERM), when it stops what it started. `--detach` leaves the
services running and returns, for scripts.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from mailctl.cli import command, fail, home
from mailctl.commands.init import init
from mailctl.commands.startup import PAIRS, set_startup


def _first(endpoints: list[Any]) -> str:
    return str(endpoints[0]) if endpoints else "(none)"


def _print_connection_info(settings: Any, server: str) -> None:
    from server.runtime.tls import ca_paths

    srv = settings.Servers[server]
    imap, pop = srv.ImapSettings, srv.PopSettings
    rows = [
        ("IMAP4 (STARTTLS)", _first(imap.UnencryptedOrTLSBindings)),
        ("IMAP4 (SSL/TLS)", _first(imap.SSLBindings)),
        ("POP3 (STLS)", _first(pop.UnencryptedOrTLSBindings)),
        ("POP3 (SSL/TLS)", _first(pop.SSLBindings)),
    ]
    for name, conn in settings.frontend_connectors(server).items():
        rows.append((f"SMTP submission (STARTTLS), {name}", _first(conn.Bindings)))
    owa = srv.OwaVirtualDirectory
    if owa.SSLBindings:
        rows.append(("Settings page (HTTPS)", f"https://{owa.SSLBindings[0]}/"))
    if owa.Bindings:
        rows.append(("Settings page (HTTP)", f"http://{owa.Bindings[0]}/"))
    width = max(len(r[0]) for r in rows)
    print(f"\nServer {server} ({srv.Fqdn}) is running:")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"  {'Certificate authority':<{width}}  {ca_paths(home())[0]} (trust it in clients)")
    print(f"  {'Login type':<{width}}  {imap.LoginType.value}: clients log in after TLS")
    from mailctl.commands.init import loopback_note

    note = loopback_note(srv)
    if note:
        print(f"\n{note}")


@command("Run")
def run(
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Start and return instead of staying in the foreground."),
    ] = False,
    base_port: Annotated[
        int | None,
        typer.Option("--base-port", help="With a new home: shift every port by this much."),
    ] = None,
    demo_password: Annotated[
        str | None, typer.Option("--demo-password", help="With a new home: the demo password.")
    ] = None,
) -> None:
    """Set up (on first run) and run everything: IMAP4, POP3, submission and the web page."""
    from server.control import services as control
    from server.settings import store

    where = home()
    if not where.settings_file.exists():
        init(base_port=base_port, demo_password=demo_password)
    settings = store.load(where).settings
    server = control.default_server(settings)
    for pair in PAIRS.values():
        set_startup(server, pair, "Automatic", what_if=False)
    try:
        started = control.start_all(where)
    except control.ControlError as exc:
        fail(f"could not start everything: {exc}", code=1)
    for info in started:
        print(f"Started {info.Name} on {info.Server}.")
    _print_connection_info(store.load(where).settings, server)
    if detach:
        print("\nStop with `mailctl stop`.")
        return
    print("\nPress Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for server_name, name in control.stop_all(where):
        print(f"Stopped {name} on {server_name}.")
