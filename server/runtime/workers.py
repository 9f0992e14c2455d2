"""Several processes for one service: the front ends sharing their ports with SO_REUSEPORT,
the back ends each with a hand-off channel of its own.

A front end is CPU-bound at login (the TLS handshake, the hand-over, the relay's copies) and
one Python process uses one core. With WorkerProcesses > 1 (Set-ImapSettings /
Set-PopSettings, a mailctl extension) the service process - the one mailctl starts, whose pid
file and control socket get-service reads - starts that many minus one worker processes of
the same service. Every process binds the same endpoints with SO_REUSEPORT, so the kernel
spreads new connections over them, and every process watches the settings and certificates
itself, so a live reload reaches every worker the same way it reaches a single process.

A back end is CPU-bound once its sessions are busy, and after login a session runs wholly
in one back-end process. With BackEndWorkerProcesses > 1 (a mailctl extension as well) the
back end runs as that many processes the same way; each listens on its own hand-off channel
(handoff_address), and a front end of this host gives each session to the process that
route() picks from a stable hash of the mailbox name, so all sessions of one mailbox share a
process: its caches stay warm and an IDLE sees that mailbox's changes without crossing
processes. Any process may serve any mailbox all the same (the store is shared between
processes, change notifications cross them, the POP3 maildrop lock is a file lock): the
back-end TCP port, where relays from other hosts arrive, is shared with SO_REUSEPORT, and a
front end whose process is restarting uses the service process meanwhile. A worker opens a
control socket of its own (worker_control_name); the service process passes each control
request (a mailbox move's end-sessions) on to its workers and adds up the answers.

The front ends' sessions share nothing across connections but the settings. What a front
end counts per process is then counted per worker: MaxConnections,
MaxConnectionFromSingleIP, MaxConnectionsPerUser and the failed-login slow-down apply to
each worker's share of the connections (README, "More cores"). That, and the memory each
process costs at rest, is why both defaults are 1 (bench/README.md, "Levers", has what a
second back-end process did on two cores).

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
import zlib
from typing import Any

from server.runtime.status import control_address, control_request
from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE, Settings
from server.settings.paths import Home

log = logging.getLogger("mailctl")

#: The services that may run workers: the settings object and its field holding the count.
WORKER_SETTINGS = {
    IMAP4: ("ImapSettings", "WorkerProcesses"),
    POP3: ("PopSettings", "WorkerProcesses"),
    IMAP4BE: ("ImapSettings", "BackEndWorkerProcesses"),
    POP3BE: ("PopSettings", "BackEndWorkerProcesses"),
}
START_TIMEOUT = 30.0
RESTART_DELAY = 1.0
#: A control request passed on to the workers: a move's end-sessions waits for running
#: commands (twice END_GRACE at most), within the 60 s the mover gives the whole request.
FORWARD_TIMEOUT = 50.0
#: A worker's status, asked for the service process's (get-service waits 2 s for that).
STATUS_TIMEOUT = 1.0


def worker_processes(settings: Settings, server: str, name: str) -> int:
    """How many processes `name` runs on `server` (1 for services without workers);
    a count of 0 means one per CPU core."""
    where = WORKER_SETTINGS.get(name)
    if where is None:
        return 1
    attr, field = where
    wanted: int = getattr(getattr(settings.server(server), attr), field)
    return wanted if wanted > 0 else (os.cpu_count() or 1)


def handoff_address(home: Home, backend_name: str, server: str, worker: int = 0) -> str:
    """The hand-off channel's socket of one process of a back end (0: the service process)."""
    suffix = f".{worker}" if worker else ""
    return control_address(home, f"{backend_name}.handoff{suffix}", server)


def route(mailbox: str, count: int) -> int:
    """Which of `count` back-end processes serves `mailbox`: a hash that every front-end
    process computes alike (Python's hash() is salted per process), of the name as the
    directory compares it."""
    if count <= 1:
        return 0
    return zlib.crc32(mailbox.casefold().encode("utf-8")) % count


def worker_control_name(name: str, worker: int) -> str:
    """The control socket name of a worker of `name` (the service process's is `name`)."""
    return f"{name}.worker{worker}"


def merge_answers(mine: dict[str, Any], theirs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One answer to a control request from the service process's and its workers': counts
    are added up (end-sessions' "ended"), an error anywhere is the answer's error. A worker
    that does not answer is one that is not running: it has no sessions."""
    merged = dict(mine)
    for answer in theirs:
        if answer is None:
            continue
        for key, value in answer.items():
            if key == "error":
                merged.setdefault("error", value)
            elif isinstance(value, int) and not isinstance(value, bool):
                current = merged.get(key, 0)
                if isinstance(current, int) and not isinstance(current, bool):
                    merged[key] = current + value
    return merged


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

    async def forward(self, request: dict[str, Any] | None) -> list[dict[str, Any] | None]:
        """Send a control request (None: the status) to every worker; their answers (None:
        no answer)."""
        home = Home.resolve(self.home)
        timeout = FORWARD_TIMEOUT if request is not None else STATUS_TIMEOUT

        def ask(index: int) -> dict[str, Any] | None:
            name = worker_control_name(self.name, index)
            return control_request(home, name, self.server, request, timeout)

        return list(
            await asyncio.gather(*(asyncio.to_thread(ask, index) for index in sorted(self._procs)))
        )

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
