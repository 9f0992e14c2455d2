"""Set-Service -StartupType, and enable-/disable-pop3 / -imap4.

Only the StartupType lives here (in settings.toml, per server). Starting, stopping and
Get-Service are the runtime's (commands/services.py): it plugs into cli.PROTOCOL_ENABLED /
PROTOCOL_DISABLED, called after the StartupTypes are written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from mailctl import cli
from mailctl.cli import ServerOpt, WhatIfOpt, command, fail, home, local_server
from server.settings.models import (
    IMAP4,
    IMAP4BE,
    POP3,
    POP3BE,
    SERVICE_DISPLAY_NAMES,
    SERVICE_NAMES,
)
from server.settings.types import StartupType

PAIRS = {"pop3": [POP3, POP3BE], "imap4": [IMAP4, IMAP4BE]}


def service_name(word: str) -> str:
    """A service by name or display name, case-insensitively (MSExchangePop3 works)."""
    for name in SERVICE_NAMES:
        if word.lower() in (name.lower(), SERVICE_DISPLAY_NAMES[name].lower()):
            return name
    fail(f"there is no service {word!r}", allowed=", ".join(SERVICE_NAMES))


def set_startup(server: str | None, services: list[str], startup: str, what_if: bool) -> str:
    """Write the StartupType of `services`; returns the server's name."""
    try:
        value = StartupType.parse(startup)
    except ValueError as exc:
        fail(f"-StartupType: {exc}")
    with cli.edit_settings(what_if) as session:
        settings = session.validate()
        key, srv = local_server(settings, server)
        changes = {}
        for service in services:
            old = srv.startup_type(service)
            if old is not value:
                changes[f"StartupType of {service}"] = (old.value, value.value)
                session.set(("Servers", key, "Services", service), value.value)
    cli.report_changes(key, changes, what_if)
    return key


@command("Set-Service")
def set_service(
    name: Annotated[
        str, typer.Argument(help="Service name, e.g. MSExchangePOP3.", show_default=False)
    ],
    startup_type: Annotated[
        str,
        typer.Option(
            "--startup-type", help="When the service starts.", metavar="Automatic|Manual|Disabled"
        ),
    ],
    server: ServerOpt = None,
    what_if: WhatIfOpt = False,
) -> None:
    """Set a service's StartupType (Automatic services start with `mailctl start`)."""
    set_startup(server, [service_name(name)], startup_type, what_if)


def toggle(
    protocol: str, enable: bool, server: str | None, what_if: bool, startup: str = "Automatic"
) -> None:
    services = PAIRS[protocol]
    key = set_startup(server, services, startup, what_if)
    if what_if:
        return
    cli.load_hook_modules()
    for hook in cli.PROTOCOL_ENABLED if enable else cli.PROTOCOL_DISABLED:
        hook(home(), key, services)


StopStartupOpt = Annotated[
    str,
    typer.Option(
        "--startup-type",
        help="What the services become: Manual (start by hand) or Disabled (refuse to start).",
        metavar="Manual|Disabled",
    ),
]


def stop_startup_type(word: str) -> str:
    """Disabling leaves the services Manual or Disabled, never Automatic."""
    try:
        value = StartupType.parse(word)
    except ValueError:
        fail(f"-StartupType {word!r} is not valid", allowed="Manual, Disabled")
    if value is StartupType.Automatic:
        fail("-StartupType Automatic would not disable anything", allowed="Manual, Disabled")
    return value.value


def enable_command(protocol: str) -> Callable[..., None]:
    """Enable-Pop3 / Enable-Imap4."""

    def enable(server: ServerOpt = None, what_if: WhatIfOpt = False) -> None:
        toggle(protocol, True, server, what_if)

    enable.__doc__ = f"Set {' and '.join(PAIRS[protocol])} to Automatic."
    return enable


def disable_command(protocol: str) -> Callable[..., None]:
    """Disable-Pop3 / Disable-Imap4."""

    def disable(
        server: ServerOpt = None,
        startup_type: StopStartupOpt = "Manual",
        what_if: WhatIfOpt = False,
    ) -> None:
        toggle(protocol, False, server, what_if, stop_startup_type(startup_type))

    disable.__doc__ = f"Set {' and '.join(PAIRS[protocol])} to Manual (or Disabled) and stop them."
    return disable


enable_pop3 = command("Enable-Pop3")(enable_command("pop3"))
disable_pop3 = command("Disable-Pop3")(disable_command("pop3"))
enable_imap4 = command("Enable-Imap4")(enable_command("imap4"))
disable_imap4 = command("Disable-Imap4")(disable_command("imap4"))
