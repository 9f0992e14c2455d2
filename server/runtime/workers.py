"""Several processes for one front-end service, sharing its ports with SO_REUSEPORT.

A front end is CPU-bound at login (the TLS handshake, the hand-over, the relay's copies) and
one Python process uses one core. With WorkerProcesses > 1 (Set-ImapSettings /
Set-PopSettings, a mailctl extension) the service process - the one mailctl starts, whose pid
file and control socket get-service reads - starts that many minus one worker processes of
the same service. Every process binds the same endpoints with SO_REUSEPORT, so the kernel
spreads new connections over them, and every process watches the settings and certificates
itself, so a live reload reaches every worker the same way it reaches a single process.

Only the front ends run workers: their sessions share nothing across connections but the
settings. What is counted per process is then counted per worker: MaxConnections,
MaxConnectionFromSingleIP, MaxConnectionsPerUser and the failed-login slow-down apply to each
worker's share of the connections (README, "More cores"). That, and the memory each
process costs at rest, is why the default is 1.

Life cycle: the service process starts the workers after its own start and waits for each
one's READY before it says READY itself; it restarts a worker that dies; on stop it sends
each SIGTERM (the worker says BYE to its sessions, as on any stop) and waits for them. A
worker holds the read end of a pipe whose write end only the service process has: if the
service process dies, even by SIGKILL, the pipe ends and the worker stops. get-service
shows the service process (its connections, its endpoints) and the workers' pids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time

from server.settings.models import IMAP4, POP3, Settings

log = logging.getLogger("mailctl")

#: The services that may run workers, and the settings object holding WorkerProcesses.
WORKER_SETTINGS = {IMAP4: "ImapSettings", POP3: "PopSettings"}
START_TIMEOUT = 30.0
RESTART_DELAY = 1.0


def worker_processes(settings: Settings, server: str, name: str) -> int:
    """How many processes `name` runs on `server` (1 for services without workers);
    WorkerProcesses 0 means one per CPU core."""
    attr = WORKER_SETTINGS.get(name)
    if attr is None:
        return 1
    wanted: int = getattr(settings.server(server), attr).WorkerProcesses
    return wanted if wanted > 0 else (os.cpu_count() or 1)


def _read_ready(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "FAILED no answer in time"
        chunk = os.read(fd, 1024)
        if not chunk:
            return "FAILED the worker exited during start"
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


class Workers:
    """The worker processes of one service process (index 1..count-1)."""

    def __init__(
        self, name: str, server: str, home: str, count: int, service_class: str | None = None
    ) -> None:
        self.name, self.server, self.home, self.count = name, server, home, count
        self.service_class = service_class
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        # The workers' lifeline: they stop when it ends (we exited, however we exited).
        self._alive_read, self._alive_write = os.pipe()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs.values()]

    async def start(self) -> None:
        """Start every worker; raises RuntimeError (the service then fails to start)."""
        for index in range(1, self.count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        ready_read, ready_write = os.pipe()
        command = [
            sys.executable,
            "-m",
            "server",
            "run",
            self.name,
            "--server",
            self.server,
            "--home",
            self.home,
            "--ready-fd",
            str(ready_write),
            "--worker",
            str(index),
            "--alive-fd",
            str(self._alive_read),
            *(["--class", self.service_class] if self.service_class else []),
        ]
        try:
            # stdout/stderr inherited: the workers log into the service's log file.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                pass_fds=(ready_write, self._alive_read),
            )
        finally:
            os.close(ready_write)
        try:
            answer = await asyncio.to_thread(_read_ready, ready_read, START_TIMEOUT)
        finally:
            os.close(ready_read)
        if answer != "READY":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            raise RuntimeError(f"worker {index} of {self.name}: {answer}")
        self._procs[index] = proc
        task = asyncio.get_running_loop().create_task(self._watch(index, proc))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        log.info("worker started index=%s pid=%s", index, proc.pid)

    async def _watch(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        code = await asyncio.to_thread(proc.wait)
        if self._stopping or self._procs.get(index) is not proc:
            return
        log.error("worker exited index=%s pid=%s code=%s; restarting", index, proc.pid, code)
        del self._procs[index]
        await asyncio.sleep(RESTART_DELAY)
        if self._stopping:
            return
        try:
            await self._spawn(index)
        except RuntimeError as exc:
            log.error("%s", exc)

    def terminate(self) -> None:
        """SIGTERM to every worker: each says goodbye to its sessions, as on any stop."""
        self._stopping = True
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> None:
        """Wait for the workers after terminate(); SIGKILL what is left after `timeout`."""
        deadline = time.monotonic() + timeout
        for proc in list(self._procs.values()):
            try:
                await asyncio.to_thread(proc.wait, max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._procs.clear()
        for fd in (self._alive_read, self._alive_write):
            with contextlib.suppress(OSError):
                os.close(fd)


def watch_lifeline(fd: int, stop: asyncio.Event) -> None:
    """In a worker: set `stop` when the service process's end of the lifeline closes."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            log.info("the service process is gone: stopping")
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
