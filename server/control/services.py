"""Service control for `mailctl`: start, stop, restart, inspect, systemd units.

A service is running only if its pid file names a live, non-zombie process whose create time
matches the one recorded and whose command line is `... -m server run NAME --server S` for
this home. Anything else (no process, a reused pid, an unrelated process) is Stopped, and
mailctl never signals it.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from server.runtime.main import control_address, read_pid_file
from server.runtime.status import find_process, is_our_command, service_status
from server.settings import store
from server.settings.host import load as load_host
from server.settings.models import (
    DELIVERY,
    IMAP4,
    IMAP4BE,
    POP3,
    POP3BE,
    REPLICATION,
    SERVICE_DISPLAY_NAMES,
    SERVICE_NAMES,
    SUBMISSION,
    WEB,
    Settings,
    default_startup_type,
)
from server.settings.names import TOPOLOGY
from server.settings.paths import Home
from server.settings.types import StartupType

# Back ends first: a front end that starts before its back end refuses logins.
# MSExchangeDelivery before the services that hand it messages (submission, receipts).
# MSExchangeADTopology first: it brings the organization's settings the others read.
# MSExchangeMailboxReplication after the back ends whose sessions it ends at a move's switch.
START_ORDER = (TOPOLOGY, IMAP4BE, POP3BE, DELIVERY, REPLICATION, IMAP4, POP3, SUBMISSION, WEB)
PAIRS = {"IMAP4": (IMAP4BE, IMAP4), "POP3": (POP3BE, POP3)}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0  # after SIGTERM; then SIGKILL (the runtime's own grace is 5 s)
SERVER_ENV = "MAILCTL_SERVER"

# Processes this process started: kept so they can be reaped (no zombies in a long-lived
# caller such as a test run) and so stop can wait on them precisely.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ControlError(Exception):
    """An operation failed; the message is one sentence for stderr (exit code 1)."""


@dataclass
class ServiceInfo:
    Status: str  # Running / Stopped
    Name: str
    DisplayName: str
    Server: str
    StartupType: str
    Pid: int | None = None
    StartTime: str | None = None
    Uptime: float | None = None  # seconds
    MemoryRSS: int | None = None  # bytes
    Connections: int | None = None
    Endpoints: list[str] = field(default_factory=list)
    SettingsVersion: str | None = None
    LastReload: dict[str, Any] | None = None
    # Mail or secrets under the home that group or others may read (see filemodes).
    TooOpenPaths: list[str] = field(default_factory=list)
    # Pids of the service's worker processes (WorkerProcesses, BackEndWorkerProcesses).
    Workers: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- names


def canonical_name(name: str) -> str:
    for known in SERVICE_NAMES:
        if known.lower() == name.lower():
            return known
    raise ControlError(
        f"Cannot find any service with service name '{name}'; services: {', '.join(SERVICE_NAMES)}."
    )


def default_server(settings: Settings) -> str:
    """This machine's server: MAILCTL_SERVER, the only one, the one whose FQDN (or name) is
    this host's, or the first one in settings.toml."""
    import socket

    wanted = os.environ.get(SERVER_ENV)
    if wanted:
        return resolve_server(settings, wanted)
    if len(settings.Servers) == 1:
        return next(iter(settings.Servers))
    host = socket.getfqdn().lower()  # the same rule as mailctl.views.pick_server
    for name, server in settings.Servers.items():
        if server.Fqdn.lower() == host or name.lower() == host.split(".")[0]:
            return name
    return next(iter(settings.Servers))


def resolve_server(settings: Settings, server: str | None) -> str:
    if not server:
        return default_server(settings)
    try:
        return settings.server_name(server)
    except KeyError:
        raise ControlError(
            f"There is no server '{server}' in settings.toml; servers: {', '.join(settings.Servers)}."
        ) from None


def _load(home: Home) -> Settings:
    try:
        return store.load(home).settings
    except store.SettingsError as exc:
        raise ControlError(exc.message) from None


# --------------------------------------------------------------------------- processes


_is_our_command = is_our_command  # the tests' name for it


def _remove_run_files(home: Home, name: str, server: str, pid: int | None = None) -> None:
    """Remove what a dead instance left; with `pid`, only if the files are still its own."""
    if pid is not None:
        record = read_pid_file(home, name, server)
        if record is not None and record.pid != pid:
            return
    paths = [home.pid_file(name, server), home.state_file(name, server)]
    address = control_address(home, name, server)
    if not address.startswith("\0"):
        paths.append(Path(address))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _service_lock(home: Home, name: str, server: str) -> Iterator[None]:
    """Serializes start/stop of one service between concurrent mailctl invocations."""
    home.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(home.run / f".{server}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def wait_exit(process: psutil.Process, timeout: float) -> bool:
    """True once the process is gone (or a zombie). Waits on a pidfd where there is one."""
    child = _children.get(process.pid)
    if child is not None:
        try:
            child.wait(timeout)
            _children.pop(process.pid, None)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    pidfd = None
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(process.pid)
    try:
        while True:
            try:
                if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                    return True
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(0.05, left))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _log_reason(log_file: Path, offset: int) -> str:
    """The most telling line the failed start wrote to its log."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines()]
    except FileNotFoundError:
        return "no log was written"
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if "level=error" in line or "Error" in line:
            return line[:500]
    return lines[-1][:500] if lines else "the process exited without writing a log"


# --------------------------------------------------------------------------- start / stop


def start_service(
    home: Home,
    name: str,
    server: str | None = None,
    timeout: float = START_TIMEOUT,
) -> ServiceInfo:
    """Start the service detached and return once it accepts connections.
    Already running: nothing to do. Disabled, or the start fails: ControlError."""
    name = canonical_name(name)
    settings = _load(home)
    server = resolve_server(settings, server)
    with _service_lock(home, name, server):
        if settings.server(server).startup_type(name) is StartupType.Disabled:
            raise ControlError(
                f"Service '{SERVICE_DISPLAY_NAMES[name]} ({name})' cannot be started due to the "
                f"following error: Cannot start service {name} on server {server} because it is "
                "disabled; set-service -StartupType Manual or Automatic first."
            )
        if find_process(home, name, server) is not None:
            return get_one(home, name, server, settings)
        _remove_run_files(home, name, server)
        _spawn_and_wait(home, name, server, timeout)
    return get_one(home, name, server, settings)


def _spawn_and_wait(home: Home, name: str, server: str, timeout: float) -> None:
    log_file = home.log_file(name, server)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    offset = log_file.stat().st_size if log_file.exists() else 0
    read_end, write_end = os.pipe()
    command = [
        sys.executable,
        "-m",
        "server",
        "run",
        name,
        "--server",
        server,
        "--home",
        str(home.root),
        "--ready-fd",
        str(write_end),
    ]
    try:
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                pass_fds=(write_end,),
                cwd=home.root,
            )
    finally:
        os.close(write_end)
    _children[process.pid] = process
    try:
        answer = _read_ready(read_end, timeout)
    finally:
        os.close(read_end)
    if answer == "READY":
        return
    if answer is None:  # no answer in time: do not leave a half-started service behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
        _children.pop(process.pid, None)
        raise ControlError(
            f"{name} did not become ready within {timeout:g} seconds; see {log_file}."
        )
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
        _children.pop(process.pid, None)
    reason = answer.removeprefix("FAILED").strip()
    if not reason or reason == "the service exited during start":
        reason = _log_reason(log_file, offset)
    raise ControlError(f"{name} on {server} failed to start: {reason}")


def _read_ready(fd: int, timeout: float) -> str | None:
    """READY, FAILED <reason>, "" for a process that died silently, None on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def stop_service(
    home: Home,
    name: str,
    server: str | None = None,
    timeout: float = STOP_TIMEOUT,
) -> bool:
    """Graceful stop (SIGTERM: no new connections, BYE, bounded wait), SIGKILL after
    `timeout`. False if it was not running."""
    name = canonical_name(name)
    server = _server_for_stop(home, server)
    with _service_lock(home, name, server):
        process = find_process(home, name, server)
        if process is None:
            _remove_run_files(home, name, server)
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)  # psutil re-checks create time first
        if not wait_exit(process, timeout):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
            wait_exit(process, 5.0)
        _remove_run_files(home, name, server, pid=process.pid)
        return True


def _server_for_stop(home: Home, server: str | None) -> str:
    """Stopping must work with a broken settings.toml too."""
    try:
        settings = store.load(home).settings
    except store.SettingsError:
        servers = _servers_without_settings(home)
        if server:
            return next((s for s in servers if s.lower() == server.lower()), server)
        if len(servers) == 1:
            return servers[0]
        raise ControlError("settings.toml is invalid; name the server with -Server.") from None
    return resolve_server(settings, server)


def restart_service(home: Home, name: str, server: str | None = None) -> ServiceInfo:
    stop_service(home, name, server)
    return start_service(home, name, server)


def start_all(home: Home) -> list[ServiceInfo]:
    """What a boot does: every Automatic service of every server here (on a host of an
    organization that spans hosts, of this host's server alone), back ends first. Tries
    them all; raises one ControlError naming those that failed."""
    settings = _load(home)
    started, failed = [], []
    mine = load_host(home.root)  # a host of a several-host organization runs its server only
    for server_name, server in settings.Servers.items():
        if mine is not None and server_name != mine.server:
            continue
        for name in START_ORDER:
            if server.startup_type(name) is StartupType.Automatic:
                try:
                    started.append(start_service(home, name, server_name))
                except ControlError as exc:
                    failed.append(str(exc))
    if failed:
        raise ControlError(" ".join(failed))
    return started


def stop_all(home: Home) -> list[tuple[str, str]]:
    """Stop every running service of this home (front ends first). Returns (server, name)."""
    stopped = []
    for server, name in _running_from_run_files(home):
        if stop_service(home, name, server):
            stopped.append((server, name))
    return stopped


def _running_from_run_files(home: Home) -> list[tuple[str, str]]:
    found = []
    if home.run.is_dir():
        for path in home.run.glob("*.pid"):
            server, _, name = path.name.removesuffix(".pid").rpartition(".")
            if name in SERVICE_NAMES and server:
                found.append((server, name))
    order = {name: i for i, name in enumerate(reversed(START_ORDER))}
    return sorted(found, key=lambda item: (order[item[1]], item[0]))


def signal_reload(home: Home) -> int:
    """SIGHUP to every running service of this home (after a settings write); returns how
    many were told. The services also watch the folder, so this only makes it faster."""
    told = 0
    for server, name in _running_from_run_files(home):
        process = find_process(home, name, server)
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGHUP)
                told += 1
    return told


def enable_pair(home: Home, protocol: str, server: str | None = None) -> list[ServiceInfo]:
    """The start half of enable-imap4 / enable-pop3 (StartupType is set by the CLI):
    back end first, then front end."""
    back, front = _pair(protocol)
    return [start_service(home, back, server), start_service(home, front, server)]


def _pair(protocol: str) -> tuple[str, str]:
    key = protocol.upper()
    return PAIRS[{"IMAP": "IMAP4", "POP": "POP3"}.get(key, key)]


def disable_pair(home: Home, protocol: str, server: str | None = None) -> None:
    """The stop half of disable-imap4 / disable-pop3: front end first, then back end."""
    back, front = _pair(protocol)
    stop_service(home, front, server)
    stop_service(home, back, server)


# --------------------------------------------------------------------------- get-service


def _servers_without_settings(home: Home) -> list[str]:
    """Server names when settings.toml does not validate: from the raw TOML if it parses,
    else from the run files."""
    try:
        data = tomllib.loads(home.settings_file.read_text("utf-8"))
        servers = list(data.get("Servers", {}))
        if servers:
            return servers
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    found = {server for server, _ in _running_from_run_files(home)}
    if home.logs.is_dir():  # services that ran once left <server>.<service>.log
        for path in home.logs.glob("*.log"):
            server, _, name = path.name.removesuffix(".log").rpartition(".")
            if name in SERVICE_NAMES and server:
                found.add(server)
    return sorted(found)


def get_one(home: Home, name: str, server: str, settings: Settings | None) -> ServiceInfo:
    startup = "Unknown"
    if settings is not None:
        with contextlib.suppress(KeyError):
            startup = settings.server(server).startup_type(name).value
    elif name in SERVICE_NAMES:
        startup = default_startup_type(name).value if not home.settings_file.exists() else "Unknown"
    return ServiceInfo(**service_status(home, name, server, startup))


def get_service(
    home: Home, pattern: str | None = None, server: str | None = None
) -> list[ServiceInfo]:
    """Services whose Name or DisplayName matches `pattern` (wildcards, any case), on this
    machine's server or `server`. Works with a broken settings.toml (that is when it matters)."""
    try:
        settings: Settings | None = store.load(home).settings
    except store.SettingsError as exc:
        settings = None
        if not (server or _servers_without_settings(home)):
            raise ControlError(exc.message) from None
    if settings is not None:
        servers = [resolve_server(settings, server)]
    elif server:
        known = _servers_without_settings(home)
        servers = [next((s for s in known if s.lower() == server.lower()), server)]
    else:
        servers = _servers_without_settings(home)[:1]
    wanted = (pattern or "*").lower()
    names = [
        n
        for n in SERVICE_NAMES
        if fnmatch.fnmatchcase(n.lower(), wanted)
        or fnmatch.fnmatchcase(SERVICE_DISPLAY_NAMES[n].lower(), wanted)
    ]
    if not names and not any(c in wanted for c in "*?["):
        canonical_name(pattern or "")  # raises Exchange's "Cannot find any service" error
    infos = [get_one(home, name, srv, settings) for srv in servers for name in names]
    from server.runtime import filemodes

    too_open = filemodes.too_open(home)  # as the files are now, services running or not
    for info in infos:
        info.TooOpenPaths = too_open
    return infos


# --------------------------------------------------------------------------- systemd


def unit_name(name: str, server: str) -> str:
    return f"mailctl-{server}-{name}.service"


def install_systemd(
    home: Home,
    output_dir: Path,
    python: str | None = None,
    user: str | None = None,
) -> list[Path]:
    """One unit per service per server, Type=simple running the service in the foreground.
    Front ends are ordered after their back end. Enable the Automatic ones with
    `systemctl enable --now` (see `automatic_units`)."""
    settings = _load(home)
    python = python or sys.executable
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    backend_of = {IMAP4: IMAP4BE, POP3: POP3BE, SUBMISSION: DELIVERY}
    for server in settings.Servers:
        for name in START_ORDER:
            after = ["network-online.target"]
            if name in backend_of:
                after.append(unit_name(backend_of[name], server))
            lines = [
                "# Written by `mailctl install-systemd`; regenerate rather than edit.",
                "[Unit]",
                f"Description={SERVICE_DISPLAY_NAMES[name]} ({name}, server {server}, mailctl)",
                f"After={' '.join(after)}",
                "Wants=network-online.target",
                "",
                "[Service]",
                "Type=simple",
                f"Environment=MAILCTL_HOME={home.root}",
                f"WorkingDirectory={home.root}",
                f"ExecStart={python} -m server run {name} --server {server} "
                f"--home {home.root} --foreground",
                "ExecReload=/bin/kill -HUP $MAINPID",
                "KillSignal=SIGTERM",
                f"TimeoutStopSec={int(STOP_TIMEOUT)}",
                "Restart=on-failure",
                "RestartSec=2",
            ]
            if user:
                lines.append(f"User={user}")
            lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
            path = output_dir / unit_name(name, server)
            path.write_text("\n".join(lines))
            written.append(path)
    return written


def automatic_units(home: Home) -> list[str]:
    settings = _load(home)
    mine = load_host(home.root)
    return [
        unit_name(name, server_name)
        for server_name, server in settings.Servers.items()
        if mine is None or server_name == mine.server
        for name in START_ORDER
        if server.startup_type(name) is StartupType.Automatic
    ]
