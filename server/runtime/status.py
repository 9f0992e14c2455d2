"""What `get-service` knows about one service without loading the settings models: its run
files (pid file, state file), the process table and its control socket. Light on purpose
(stdlib and psutil): mailctl's fast path answers `get-service --output json` with it, and
server.control.services and .main build on the same functions."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from server.settings.names import SERVICE_DISPLAY_NAMES
from server.settings.paths import Home


class PidRecord(NamedTuple):
    pid: int
    create_time: float


def read_pid_file(home: Home, name: str, server: str) -> PidRecord | None:
    try:
        lines = home.pid_file(name, server).read_text().split()
        return PidRecord(int(lines[0]), float(lines[1]) if len(lines) > 1 else 0.0)
    except (FileNotFoundError, ValueError, IndexError):
        return None


def control_address(home: Home, name: str, server: str) -> str:
    """The control socket: a file in run/ when its path fits in sun_path (108 bytes), else an
    abstract-namespace name derived from that path (deep test folders)."""
    path = str(home.run / f"{server}.{name}.sock")
    if len(os.fsencode(path)) < 100:
        return path
    return "\0mailctl." + hashlib.sha256(path.encode()).hexdigest()[:24]


def query_control(
    home: Home, name: str, server: str, timeout: float = 2.0
) -> dict[str, Any] | None:
    """Ask a running service for its live status; None when it does not answer."""
    return control_request(home, name, server, None, timeout)


def control_request(
    home: Home, name: str, server: str, request: dict[str, Any] | None, timeout: float = 2.0
) -> dict[str, Any] | None:
    """Send a running service one control request (a JSON object; None: the status) and
    return its answer; None when it does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(control_address(home, name, server))
        if request is not None:
            sock.sendall(json.dumps(request).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # the request is complete (none: the status)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def is_our_command(cmdline: list[str], home: Home, name: str, server: str) -> bool:
    try:
        at = cmdline.index("run")
        if cmdline[at - 1] != "server" or cmdline[at + 1] != name:
            return False
        if cmdline[cmdline.index("--server") + 1].lower() != server.lower():
            return False
    except (ValueError, IndexError):
        return False
    if "--home" in cmdline:
        given = cmdline[cmdline.index("--home") + 1] if cmdline[-1] != "--home" else ""
        if Path(given).absolute() != home.root:
            return False
    return True


def find_process(home: Home, name: str, server: str) -> psutil.Process | None:
    """The running service process, verified; None if its pid file is missing or stale."""
    record = read_pid_file(home, name, server)
    if record is None:
        return None
    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > 0.05:
            return None  # the pid was reused by another process
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if not is_our_command(process.cmdline(), home, name, server):
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def read_state(home: Home, name: str, server: str) -> dict[str, Any] | None:
    try:
        return json.loads(home.state_file(name, server).read_text())
    except (FileNotFoundError, ValueError):
        return None


def service_status(home: Home, name: str, server: str, startup: str) -> dict[str, Any]:
    """The fields of control.ServiceInfo for one service, as a dict."""
    info: dict[str, Any] = {
        "Status": "Stopped",
        "Name": name,
        "DisplayName": SERVICE_DISPLAY_NAMES.get(name, name),
        "Server": server,
        "StartupType": startup,
        "Pid": None,
        "StartTime": None,
        "Uptime": None,
        "MemoryRSS": None,
        "Connections": None,
        "Endpoints": [],
        "SettingsVersion": None,
        "LastReload": None,
        "Workers": [],
    }
    process = find_process(home, name, server)
    if process is None:
        return info
    info["Status"] = "Running"
    info["Pid"] = process.pid
    try:
        created = process.create_time()
        info["Uptime"] = round(time.time() - created, 1)
        info["StartTime"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(created))
        info["MemoryRSS"] = process.memory_info().rss
    except psutil.Error:
        pass
    live = query_control(home, name, server) or read_state(home, name, server)
    if live:
        info["Connections"] = live.get("Connections")
        info["Endpoints"] = list(live.get("Endpoints") or [])
        info["SettingsVersion"] = live.get("SettingsVersion")
        info["LastReload"] = live.get("LastReload")
        # The pids of its worker processes (server/runtime/workers.py), if it runs any.
        info["Workers"] = list((live.get("Extra") or {}).get("Workers") or [])
    return info
