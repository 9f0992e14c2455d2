"""Start-Service, Stop-Service, Restart-Service, Get-Service, `mailctl start` / `stop`,
Install-Systemd, and the start/stop half of enable-/disable-pop3/imap4 (via the CLI hooks).
The work is done by server.control.services; these are thin wrappers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailctl import views
from mailctl.cli import (
    PROTOCOL_DISABLED,
    PROTOCOL_ENABLED,
    SERVICE_STATUS,
    CommandError,
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    command,
    emit,
    fail,
    home,
    load_settings,
)

if TYPE_CHECKING:
    from server.control.services import ServiceInfo
    from server.settings.paths import Home

NameArg = Annotated[str, typer.Argument(help="Service name, e.g. MSExchangeIMAP4BE.")]
TABLE_COLUMNS = views.SERVICE_COLUMNS


def service_row(info: ServiceInfo) -> dict[str, Any]:
    return views.service_row(info.to_dict())


def _control_call(func: Any, *args: Any, **kwargs: Any) -> Any:
    from server.control.services import ControlError

    try:
        return func(*args, **kwargs)
    except ControlError as exc:
        fail(str(exc), code=1)


def _say_running(info: ServiceInfo) -> None:
    where = ", ".join(info.Endpoints) or "no listeners"
    print(f"{info.Name} on {info.Server}: Running (pid {info.Pid}, {where}).")


def _what_if(action: str, name: str, server: str | None) -> None:
    """-WhatIf of the service commands: the service and server resolved, nothing done."""
    from server.control import services as control

    canonical = _control_call(control.canonical_name, name)
    where = _control_call(control.resolve_server, _control_call(control._load, home()), server)
    running = control.find_process(home(), canonical, where) is not None
    state = "running" if running else "not running"
    print(f"What if: would {action} {canonical} on {where} (now {state}).")


@command("Start-Service")
def start_service(name: NameArg, server: ServerOpt = None, what_if: WhatIfOpt = False) -> None:
    """Start a service; returns once it accepts connections (or fails with the reason)."""
    from server.control import services as control

    if what_if:
        return _what_if("start", name, server)
    _say_running(_control_call(control.start_service, home(), name, server))


@command("Stop-Service")
def stop_service(
    name: NameArg,
    server: ServerOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 10.0,
    what_if: WhatIfOpt = False,
) -> None:
    """Stop a service gracefully: no new connections, sessions told BYE, then forced."""
    from server.control import services as control

    if what_if:
        return _what_if("stop", name, server)
    was_running = _control_call(control.stop_service, home(), name, server, timeout)
    canonical = _control_call(control.canonical_name, name)
    print(f"{canonical}: Stopped{'' if was_running else ' (was not running)'}.")


@command("Restart-Service")
def restart_service(name: NameArg, server: ServerOpt = None, what_if: WhatIfOpt = False) -> None:
    """Stop the service (if running) and start it again."""
    from server.control import services as control

    if what_if:
        return _what_if("restart", name, server)
    _say_running(_control_call(control.restart_service, home(), name, server))


@command("Get-Service", read=True)
def get_service(
    name: Annotated[
        str | None, typer.Argument(help="Service name or wildcard (MSExchange*); default all.")
    ] = None,
    server: ServerOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Status of the services: Status, Name, DisplayName, StartupType, pid, uptime, memory,
    open connections, listening endpoints, settings version in force, last reload."""
    from server.control import services as control

    with contextlib.suppress(CommandError):
        load_settings()  # leaves the fast path's cache current: the next get-service is fast
    infos = _control_call(control.get_service, home(), name, server)
    emit([service_row(i) for i in infos], output, columns=TABLE_COLUMNS)
    too_open = infos[0].TooOpenPaths if infos else []
    if too_open and output.lower() == "table":
        from server.runtime.filemodes import summary

        print(
            f"WARNING: mail or secrets readable by group or others (should be 0600 files, "
            f"0700 folders): {summary(too_open)}"
        )


@command("Start")
def start_all() -> None:
    """Start every Automatic service of the servers in settings.toml (what boot does),
    back ends first."""
    from server.control import services as control

    for info in _control_call(control.start_all, home()):
        _say_running(info)


@command("Stop")
def stop_all() -> None:
    """Stop every running service of this installation, front ends first."""
    from server.control import services as control

    stopped = control.stop_all(home())
    for server, name in stopped:
        print(f"{name} on {server}: Stopped.")
    if not stopped:
        print("No service was running.")


@command("Install-Systemd")
def install_systemd(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where to write the unit files.")
    ] = Path("/etc/systemd/system"),
    user: Annotated[
        str | None, typer.Option("--user", help="Run the services as this user (User=).")
    ] = None,
    what_if: WhatIfOpt = False,
) -> None:
    """Write one systemd unit per service per server (Type=simple, foreground process)."""
    from server.control import services as control

    if what_if:
        settings = _control_call(control._load, home())
        for server in settings.Servers:
            for name in control.START_ORDER:
                print(f"What if: would write {output_dir / control.unit_name(name, server)}")
        return
    try:
        written = _control_call(control.install_systemd, home(), output_dir, user=user)
    except OSError as exc:
        fail(f"cannot write units to {output_dir}: {exc.strerror}", code=1)
    for path in written:
        print(f"Wrote {path}")
    automatic = _control_call(control.automatic_units, home())
    print(
        "Then: systemctl daemon-reload"
        + (f" && systemctl enable --now {' '.join(automatic)}" if automatic else "")
    )


# --------------------------------------------------------------------------- CLI hooks


def _start_after_enable(home_: Home, server: str, names: list[str]) -> None:
    from server.control import services as control

    for name in sorted(names, key=control.START_ORDER.index):
        _control_call(control.start_service, home_, name, server)


def _stop_after_disable(home_: Home, server: str, names: list[str]) -> None:
    from server.control import services as control

    for name in sorted(names, key=control.START_ORDER.index, reverse=True):
        _control_call(control.stop_service, home_, name, server)


def _status(home_: Home, server: str, name: str) -> str:
    from server.control import services as control

    return "Running" if control.find_process(home_, name, server) is not None else "Stopped"


PROTOCOL_ENABLED.append(_start_after_enable)
PROTOCOL_DISABLED.append(_stop_after_disable)
SERVICE_STATUS.append(_status)
