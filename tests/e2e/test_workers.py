"""Front-end worker processes (WorkerProcesses, server/runtime/workers.py): every process
accepts on the shared port (SO_REUSEPORT), a live reload reaches each of them, and they go
with the service process, whether it stops or is killed."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

import psutil
import pytest

from server.runtime.main import query_control
from server.settings.models import IMAP4

from .conftest import ServiceRunner

pytestmark = pytest.mark.e2e

CONNECTIONS = 40  # all on one process of two by chance: 2**-39


def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)


def accepted_by(pids: list[int], port: int) -> dict[int, int]:
    """Established connections on `port` held by each process."""
    return {
        pid: sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
        for pid in pids
    }


def greet_many(port: int) -> tuple[list[socket.socket], list[bytes]]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CONNECTIONS)]
    return socks, [s.recv(300) for s in socks]


def test_workers_share_the_port_reload_and_stop_with_the_service(services: ServiceRunner) -> None:
    runner = services
    runner.run_ok("set-imapsettings", "--worker-processes", "2")
    runner.start(IMAP4)
    status = query_control(runner.home, IMAP4, "MBX01") or {}
    main = int(status["Pid"])
    [worker] = status["Extra"]["Workers"]
    port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port

    socks, greetings = greet_many(port)
    try:
        assert all(g.startswith(b"* OK") for g in greetings)
        until(lambda: all(accepted_by([main, worker], port).values()))
    finally:
        for s in socks:
            s.close()

    runner.run_ok("set-imapsettings", "--banner", "Workers reloaded")

    def every_process_reloaded() -> bool:
        socks, greetings = greet_many(port)
        try:
            counts = accepted_by([main, worker], port)
            return all(b"Workers reloaded" in g for g in greetings) and all(counts.values())
        finally:
            for s in socks:
                s.close()

    until(every_process_reloaded)

    runner.stop(IMAP4)
    until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie")


def test_a_worker_stops_when_the_service_process_is_killed(services: ServiceRunner) -> None:
    runner = services
    runner.run_ok("set-imapsettings", "--worker-processes", "2")
    runner.start(IMAP4)
    status = query_control(runner.home, IMAP4, "MBX01") or {}
    [worker] = status["Extra"]["Workers"]
    os.kill(int(status["Pid"]), signal.SIGKILL)
    until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie")


def test_worker_processes_setting_is_checked(services: ServiceRunner) -> None:
    result = services.mailctl("set-imapsettings", "--worker-processes", "-1")
    assert result.returncode != 0
    assert services.settings.server("MBX01").ImapSettings.WorkerProcesses == 1
