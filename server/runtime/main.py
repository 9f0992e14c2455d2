"""The process of one service: `python -m server run NAME --server S --home H`.

Life cycle: load the settings, build the ServiceContext, await `start()`, then write the pid
file and the state file and only then tell the parent "READY" (on the inherited pipe given with
--ready-fd), so `mailctl start-service` returns exactly when connections are accepted. After
that the process waits on three things, none of which costs CPU while idle: SIGTERM/SIGINT
(graceful stop), SIGHUP or an inotify event on the settings folder (reload), and connections
on its control socket (live status for `mailctl get-service`). A change of the certificate
index (certs/certificates.json) or SIGHUP also makes the service pick its certificate again
(Service.reload_certificates), so an enabled certificate serves the next handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil

from server.runtime import filemodes
from server.runtime.listeners import set_reuse_port
from server.runtime.malloc import fix_mmap_threshold, limit_arenas
from server.runtime.reload import SettingsWatcher
from server.runtime.service import REGISTRY, Service, ServiceContext, load_service_class
from server.runtime.sslbuffers import install as share_tls_buffers
from server.runtime.status import PidRecord, control_address, read_pid_file
from server.runtime.status import (
    query_control as query_control,  # tests and control use it from here
)
from server.runtime.workers import (
    Workers,
    merge_answers,
    watch_lifeline,
    worker_control_name,
    worker_processes,
)
from server.settings import store
from server.settings.paths import Home

STOP_GRACE = 5.0  # seconds sessions get to finish after BYE before they are closed
# A control client that neither sends a request nor shuts its side gets the status after this.
CONTROL_READ_TIMEOUT = 1.0
# uvloop where installed: measured faster for every scenario (bench/README.md, "Levers").
DEFAULT_EVENT_LOOP = "uvloop"
TEST_REGISTRY_ENV = "MAILCTL_TEST_REGISTRY"  # JSON {service name: "module:Class"}, for tests


# --------------------------------------------------------------------------- run files


def write_pid_file(home: Home, name: str, server: str) -> PidRecord:
    """First line the pid (what PIDFile= and `kill $(head -1 ...)` expect), second line the
    process create time, so a reused pid is never mistaken for the service."""
    me = psutil.Process()
    record = PidRecord(me.pid, me.create_time())
    home.run.mkdir(parents=True, exist_ok=True)
    store.atomic_write(
        home.pid_file(name, server), f"{record.pid}\n{record.create_time!r}\n".encode()
    )
    return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- logging


class KeyValueFormatter(logging.Formatter):
    """One line per event, key=value (design.md, conventions)."""

    def __init__(self, service: str, server: str) -> None:
        super().__init__()
        self.service, self.server = service, server

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += " " + self.formatException(record.exc_info).replace("\n", " | ")
        return (
            f"time={datetime.fromtimestamp(record.created, UTC).isoformat(timespec='milliseconds')}"
            f" level={record.levelname.lower()} service={self.service} server={self.server}"
            f" msg={json.dumps(message)}"
        )


def setup_logging(name: str, server: str) -> logging.Logger:
    # KeyValueFormatter writes none of the caller's file and line, thread, process or
    # multiprocessing names: not looked up for each record (the logging HOWTO's
    # "Optimization"). A front end logs a line per login.
    logging._srcfile = None  # pyright: ignore[reportPrivateUsage]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(name, server))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("MAILCTL_LOG_LEVEL", "INFO").upper())
    return logging.getLogger("mailctl")


# --------------------------------------------------------------------------- runtime


def load_class(name: str, override: str | None = None) -> type[Service]:
    spec = override or json.loads(os.environ.get(TEST_REGISTRY_ENV) or "{}").get(name)
    if spec:
        import importlib

        module_name, _, class_name = spec.partition(":")
        return getattr(importlib.import_module(module_name), class_name)
    if name not in REGISTRY:
        raise LookupError(f"no service named {name}; known: {', '.join(REGISTRY)}")
    return load_service_class(name)


class Runtime:
    def __init__(
        self,
        name: str,
        server: str,
        home: Home,
        service_class: str | None = None,
        worker: int = 0,
        alive_fd: int | None = None,
    ) -> None:
        self.name, self.server, self.home = name, server, home
        self.service_class = service_class
        # A worker (index > 0) serves and reloads like the service process but leaves the
        # pid file, state file and control socket to it (server/runtime/workers.py).
        self.worker, self.alive_fd = worker, alive_fd
        self.workers: Workers | None = None
        self.log = logging.getLogger("mailctl")
        self.service: Service | None = None
        self.ctx: ServiceContext | None = None
        self.pid: PidRecord | None = None
        self.started = _now()
        self.last_reload: dict[str, Any] = {
            "Result": "OK",
            "Error": None,
            "Line": None,
            "Time": None,
        }
        self.reloads = 0
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reload_again = False
        self._certificates_changed = False
        self._watcher: SettingsWatcher | None = None
        self._control: asyncio.AbstractServer | None = None
        self.too_open: list[str] = []

    # ---- start / stop -----------------------------------------------------
    async def start(self) -> None:
        snap = store.load(self.home)
        try:
            self.server = snap.settings.server_name(self.server)
        except KeyError:
            raise LookupError(
                f"no server {self.server!r} in settings; servers: {', '.join(snap.settings.Servers)}"
            ) from None
        self.ctx = ServiceContext(
            self.name, self.server, self.home, snap.settings, snap.version, self.log
        )
        count = worker_processes(snap.settings, self.server, self.name)
        self.ctx.worker, self.ctx.workers = self.worker, count
        set_reuse_port(count > 1)
        if not self.worker:
            # Mail and secrets left readable by others (an older version, a restore): fixed
            # now; what cannot be fixed is logged and shown by get-service.
            self.too_open = await asyncio.to_thread(filemodes.secure, self.home)
        service = load_class(self.name, self.service_class)(self.ctx)
        await service.start()
        self.service = service
        if self.worker:
            if self.alive_fd is not None:
                watch_lifeline(self.alive_fd, self._stopping)
        elif count > 1:
            self.workers = Workers(
                self.name, self.server, str(self.home.root), count, self.service_class
            )
            await self.workers.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_certificate_reload)
        self._watcher = SettingsWatcher(
            self.home, self.request_reload, self.request_certificate_reload
        )
        await self._watcher.start()
        # A change that landed during start() has no event left to see.
        self.request_certificate_reload()
        if self.worker:
            # Its own control socket: the service process passes control requests on.
            await self._open_control()
            self.log.info("worker %s started", self.worker)
            return
        await self._open_control()
        self.pid = write_pid_file(self.home, self.name, self.server)
        self.write_state()
        self.log.info(
            "started version=%s endpoints=%s", snap.version, self.status().get("Endpoints")
        )

    async def wait_and_stop(self, grace: float = STOP_GRACE) -> None:
        await self._stopping.wait()
        await self.stop(grace)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        self.log.info("stopping grace=%s", grace)
        if self._watcher is not None:
            self._watcher.close()
        if self.workers is not None:
            self.workers.terminate()  # they stop alongside, each with its own grace
        if self.service is not None:
            try:
                await asyncio.wait_for(self.service.stop(grace), grace + 2.0)
            except Exception:
                self.log.exception("stop did not finish cleanly")
        if self.workers is not None:
            await self.workers.wait(grace + 2.0)
        if self._control is not None:
            self._control.close()
        if self.worker:
            address = self._control_address()
            if not address.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)
        self._remove_run_files()
        self.log.info("stopped")

    def _remove_run_files(self) -> None:
        # Only our own files: a newer instance may already have replaced them.
        mine = read_pid_file(self.home, self.name, self.server)
        if self.pid is None or mine is None or mine.pid != self.pid.pid:
            return
        address = control_address(self.home, self.name, self.server)
        paths = [
            self.home.state_file(self.name, self.server),
            self.home.pid_file(self.name, self.server),
        ]
        if not address.startswith("\0"):
            paths.insert(0, type(self.home.root)(address))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # ---- reload -----------------------------------------------------------
    def request_reload(self) -> None:
        if self._reload_lock.locked():
            self._reload_again = True  # a change landed while reloading: read the file again
            return
        asyncio.get_running_loop().create_task(self.reload())

    def request_certificate_reload(self) -> None:
        """Certificates changed (or SIGHUP): settings and certificates are both read again,
        one after the other under the reload lock, so the two never race on an SSLContext."""
        self._certificates_changed = True
        self.request_reload()

    async def reload(self) -> None:
        async with self._reload_lock:
            while True:
                self._reload_again = False
                await self._reload_once()
                if self._certificates_changed:
                    self._certificates_changed = False
                    await self._reload_certificates()
                if not self._reload_again:
                    break
        if not self.worker:
            self.write_state()

    async def _reload_certificates(self) -> None:
        assert self.service is not None
        try:
            await self.service.reload_certificates()
        except Exception as exc:
            self.log.exception("certificate reload failed")
            self._record_error(f"certificates: {type(exc).__name__}: {exc}", None, keep=False)
            return
        self.log.info("certificates checked")

    async def _reload_once(self) -> None:
        assert self.ctx is not None and self.service is not None
        try:
            snap = store.load(self.home)
            snap.settings.server(self.server)
        except store.SettingsError as exc:
            self._record_error(exc.message, exc.line)
            return
        except KeyError:
            self._record_error(f"server {self.server} is no longer in settings.toml", None)
            return
        if snap.version == self.ctx.version:
            if self.last_reload["Result"] != "OK":  # the file was put back as it was
                self._record_ok()
            return
        old, old_version = self.ctx.settings, self.ctx.version
        self.ctx.settings, self.ctx.version = snap.settings, snap.version
        try:
            await self.service.reload(old, snap.settings)
        except Exception as exc:
            self.log.exception("reload failed version=%s", snap.version)
            # The old version stays in force: put its settings back and undo what the failed
            # reload did (e.g. listeners it bound). Keeping the new version here would let the
            # next event, which sees an unchanged file, report the failed reload as OK.
            self.ctx.settings, self.ctx.version = old, old_version
            try:
                await self.service.reload(snap.settings, old)
            except Exception:
                self.log.exception("could not go back to version=%s", old_version)
            self._record_error(
                f"version {snap.version} not applied, {old_version} still in force: "
                f"{type(exc).__name__}: {exc}",
                None,
                keep=False,
            )
            return
        self.reloads += 1
        self._record_ok()
        self.log.info("reloaded version=%s", snap.version)

    def _record_error(self, message: str, line: int | None, keep: bool = True) -> None:
        if keep:
            self.log.error(
                "settings not applied, keeping version=%s: %s",
                self.ctx.version if self.ctx else "",
                message,
            )
        self.last_reload = {"Result": "Error", "Error": message, "Line": line, "Time": _now()}

    def _record_ok(self) -> None:
        self.last_reload = {"Result": "OK", "Error": None, "Line": None, "Time": _now()}

    # ---- status -----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        live: dict[str, Any] = {}
        if self.service is not None:
            try:
                live = self.service.status()
            except Exception:
                self.log.exception("status() failed")
        return {
            "Name": self.name,
            "Server": self.server,
            "Pid": os.getpid(),
            "CreateTime": self.pid.create_time if self.pid else None,
            "StartTime": self.started,
            "SettingsVersion": self.ctx.version if self.ctx else None,
            "Connections": live.get("connections", 0),
            "Endpoints": live.get("endpoints", []),
            # What else the service reports (MSExchangeADTopology: its copy's version, the
            # directory's last error), for the commands about it.
            "Details": {k: v for k, v in live.items() if k not in ("connections", "endpoints")},
            "LastReload": self.last_reload,
            "TooOpenPaths": self.too_open,
            "Reloads": self.reloads,
            "Updated": _now(),
            "Extra": {
                **{k: v for k, v in live.items() if k not in ("connections", "endpoints")},
                **({"Workers": self.workers.pids} if self.workers is not None else {}),
            },
        }

    async def _status_with_workers(self) -> dict[str, Any]:
        """The status, its Connections counting the workers' (a back end's sessions are
        mostly theirs). The state file keeps the service process's own count."""
        status = self.status()
        if self.workers is not None:
            for answer in await self.workers.forward(None):
                if answer is not None:
                    status["Connections"] += int(answer.get("Connections") or 0)
        return status

    def write_state(self) -> None:
        """The state file: what get-service shows when the control socket does not answer.
        Written at start and after each reload, never per connection."""
        data = json.dumps(self.status(), indent=2, default=str).encode()
        store.atomic_write(self.home.state_file(self.name, self.server), data)

    def _control_address(self) -> str:
        name = worker_control_name(self.name, self.worker) if self.worker else self.name
        return control_address(self.home, name, self.server)

    async def _open_control(self) -> None:
        address = self._control_address()
        if not address.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
        self._control = await asyncio.start_unix_server(self._answer_status, path=address)
        if not address.startswith("\0"):
            os.chmod(address, 0o600)

    async def _answer_status(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The status, for a client that sends nothing (query_control shuts its side);
        a JSON object on the first line is a request for the service (Service.control,
        e.g. a mailbox move ending the sessions of a mailbox)."""
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), CONTROL_READ_TIMEOUT)
            except (TimeoutError, ValueError):
                line = b""
            answer: Any = None
            if line.strip():
                try:
                    request = json.loads(line)
                except ValueError:
                    request = None
                if isinstance(request, dict) and self.service is not None:
                    try:
                        answer = await self.service.control(request)
                    except Exception as exc:
                        self.log.exception("control request failed")
                        answer = {"error": f"{type(exc).__name__}: {exc}"}
                    if self.workers is not None:
                        # A mailbox's sessions may be in any process of the service.
                        answer = merge_answers(answer, await self.workers.forward(request))
                else:
                    answer = {"error": "a control request is one JSON object"}
            out = answer if answer is not None else await self._status_with_workers()
            writer.write(json.dumps(out, default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


# --------------------------------------------------------------------------- entry


@contextlib.contextmanager
def _ready_pipe(fd: int | None) -> Iterator[Any]:
    """The parent's readiness pipe: one line, READY or FAILED <reason>."""

    def say(line: str) -> None:
        nonlocal fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, (line.replace("\n", " ") + "\n").encode())
            os.close(fd)
        fd = None

    try:
        yield say
    finally:
        say("FAILED the service exited during start")


async def _main(
    name: str,
    server: str,
    home: Home,
    ready_fd: int | None,
    service_class: str | None,
    worker: int = 0,
    alive_fd: int | None = None,
) -> int:
    runtime = Runtime(name, server, home, service_class, worker, alive_fd)
    with _ready_pipe(ready_fd) as say:
        try:
            await runtime.start()
        except Exception as exc:
            reason = (
                f"{exc}"
                if isinstance(exc, OSError | LookupError | store.SettingsError)
                else (f"{type(exc).__name__}: {exc}")
            )
            runtime.log.error(
                "start failed: %s",
                reason,
                exc_info=not isinstance(exc, OSError | LookupError | store.SettingsError),
            )
            say(f"FAILED {reason}")
            if runtime.service is not None:
                with contextlib.suppress(Exception):
                    await runtime.service.stop(0)
            if runtime.workers is not None:
                runtime.workers.terminate()
                await runtime.workers.wait(STOP_GRACE)
            return 1
        say("READY")
    await runtime.wait_and_stop()
    return 0


EVENT_LOOP_ENV = "MAILCTL_EVENT_LOOP"  # "asyncio" or "uvloop"; unset: DEFAULT_EVENT_LOOP


def event_loop_policy() -> tuple[str, asyncio.AbstractEventLoopPolicy | None]:
    """The event loop a service runs on: its name and the policy (None: asyncio's own).
    uvloop when asked for and installed; asyncio otherwise (also the fallback when uvloop
    is missing: it is an optional speed-up, never a requirement)."""
    wanted = os.environ.get(EVENT_LOOP_ENV, DEFAULT_EVENT_LOOP)
    if wanted == "uvloop":
        try:
            import uvloop
        except ImportError:
            return "asyncio", None
        return "uvloop", uvloop.EventLoopPolicy()
    return "asyncio", None


def run(
    name: str,
    server: str,
    home: Home,
    ready_fd: int | None = None,
    service_class: str | None = None,
    worker: int = 0,
    alive_fd: int | None = None,
) -> int:
    os.umask(filemodes.UMASK)  # everything the service writes is the service's own
    limit_arenas()  # before any thread: see server/runtime/malloc.py
    fix_mmap_threshold()
    setup_logging(name, server)
    loop_name, policy = event_loop_policy()
    if policy is not None:
        asyncio.set_event_loop_policy(policy)
    else:
        share_tls_buffers()  # one 256 KiB TLS receive buffer per thread, not per connection
    logging.getLogger("mailctl").info("event loop: %s", loop_name)
    started = time.monotonic()
    code = asyncio.run(_main(name, server, home, ready_fd, service_class, worker, alive_fd))
    logging.getLogger("mailctl").info("exit code=%s after=%.1fs", code, time.monotonic() - started)
    return code
