"""Fixtures for end-to-end tests: real service processes started through mailctl.

    def test_something(services):
        services.start("MSExchangeIMAP4BE")          # `mailctl start-service` (real process)
        port = services.settings.server("MBX01").ImapBackEndPort
        ...                                           # stopped at teardown, whatever happens

`services.mailctl(*args)` runs the CLI against the test's home and returns the completed
process; `services.run_ok(...)` also asserts exit code 0. `echo_services` runs the tiny
EchoService below in place of the real classes (for tests of the runtime itself).

In-process set-ups that many tests share: `env` (the home with the test mailboxes),
`delivery` (MSExchangeDelivery) and `smtp_service` (client submission delivering through it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.control import services as control
from server.runtime.listeners import ListenerSet
from server.runtime.main import TEST_REGISTRY_ENV
from server.runtime.service import Service
from server.settings import store
from server.settings.models import (
    DELIVERY,
    IMAP4,
    IMAP4BE,
    POP3,
    POP3BE,
    REPLICATION,
    SERVICE_NAMES,
    SUBMISSION,
    WEB,
    LoginType,
    PortPlan,
    Settings,
    default_settings,
)
from server.settings.paths import Home
from server.settings.types import IPEndPoint
from tests.conftest import InProcessService, free_base_port, free_port_plan  # noqa: F401 - re-exported for e2e tests
from tests.e2e.frontend_support import add_mailboxes, configure

REPO = Path(__file__).resolve().parents[2]


def reusable_port_plan(address: str = "127.0.0.1") -> PortPlan:
    return free_port_plan(address)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """tests/conftest.py's `home`, with a port check that ignores TIME_WAIT left by earlier
    tests (e2e tests open many connections; the services bind with SO_REUSEADDR)."""
    home = Home.resolve(tmp_path / "home")
    store.create(
        home, default_settings(server="MBX01", domain="contoso.test", ports=reusable_port_plan())
    )
    return home


@pytest.fixture
def env(home: Home) -> Home:
    """`home` with the test mailboxes (bob, alice, carol, ...: frontend_support.add_mailboxes),
    each with the password frontend_support.PASSWORD."""
    add_mailboxes(home)
    return home


@pytest.fixture
def delivery(env: Home, in_process: type[InProcessService]) -> Iterator[InProcessService]:
    """MSExchangeDelivery of `env`, in-process: the one way into the store for mail."""
    with in_process(DELIVERY, env) as svc:
        yield svc


@pytest.fixture
def smtp_service(
    env: Home, delivery: InProcessService, in_process: type[InProcessService]
) -> Iterator[InProcessService]:
    """Client submission of `env`, in-process, handing local mail to `delivery`; with short
    login-failure delays and delivery retries, so that tests of them stay fast."""
    with in_process(SUBMISSION, env) as svc:
        svc.service.logins.throttle.base = 0.01
        svc.service.delivery.retry_base = 0.05
        yield svc


@pytest.fixture
def imap_site(env: Home, in_process: type[InProcessService]) -> Iterator[Home]:
    """`env` with its IMAP back end and front end in-process, plain-text LOGIN allowed (the
    clients in these tests, imaplib and imaptest, log in without STARTTLS)."""
    configure(env, "IMAP", LoginType=LoginType.PlainTextLogin)
    with in_process(IMAP4BE, env, "MBX01"), in_process(IMAP4, env, "MBX01"):
        yield env


class ServiceRunner:
    """Starts services of one home through the CLI (or the control library) and guarantees
    they are stopped at teardown."""

    def __init__(self, home: Home, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.started: list[tuple[str, str | None]] = []

    @property
    def settings(self) -> Settings:
        return store.load(self.home).settings

    def mailctl(
        self, *args: str, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI, with `stdin` as its input (None: the test's own stdin)."""
        return subprocess.run(
            [sys.executable, "-m", "mailctl", *args],
            env=self.env,
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_ok(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = self.mailctl(*args, stdin=stdin)
        assert result.returncode == 0, f"mailctl {' '.join(args)}: {result.stderr}{result.stdout}"
        return result

    def new_mailbox(self, name: str, password: str) -> None:
        """`mailctl new-mailbox NAME --password-stdin`."""
        self.run_ok("new-mailbox", name, "--password-stdin", stdin=password + "\n")

    def start_imap_plain(self) -> int:
        """The IMAP pair (MSExchangeIMAP4BE, MSExchangeIMAP4) started with plain-text LOGIN
        allowed, as clients without STARTTLS need; the front end's plain port."""
        self.run_ok("Set-ImapSettings", "-LoginType", "PlainTextLogin")
        self.start(IMAP4BE)
        self.start(IMAP4)
        return self.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port

    def start(self, name: str, server: str | None = None, via_cli: bool = True) -> None:
        """`mailctl start-service NAME [-Server S]`; returns when the service is ready."""
        self.started.append((name, server))
        if via_cli and _cli_has("start-service"):
            self.run_ok("start-service", name, *(["--server", server] if server else []))
        else:
            with _env(self.env):
                control.start_service(self.home, name, server)

    def stop(self, name: str, server: str | None = None) -> None:
        with _env(self.env):
            control.stop_service(self.home, name, server)

    def get(self, name: str, server: str | None = None) -> control.ServiceInfo:
        with _env(self.env):
            return control.get_service(self.home, name, server)[0]

    def stop_all(self) -> None:
        with _env(self.env):
            control.stop_all(self.home)


def _cli_has(command: str) -> bool:
    """True once the CLI registers the command (the CLI is written in parallel)."""
    try:
        from mailctl.commands import services as _  # noqa: F401
    except ImportError:
        return False
    return (REPO / "mailctl" / "__main__.py").exists()


class _env:
    """Temporarily apply the fixture's environment (MAILCTL_HOME, test registry) in-process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.saved = env, {}

    def __enter__(self) -> None:
        for key in (TEST_REGISTRY_ENV, "MAILCTL_HOME", "PYTHONPATH"):
            self.saved[key] = os.environ.get(key)
            if key in self.env:
                os.environ[key] = self.env[key]
            else:
                os.environ.pop(key, None)

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _base_env(home: Home, registry: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["MAILCTL_HOME"] = str(home.root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(TEST_REGISTRY_ENV, None)
    if registry:
        env[TEST_REGISTRY_ENV] = json.dumps(registry)
    return env


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[ServiceRunner]:
    """An empty home folder (nothing created yet: start with `runner.run_ok("init", ...)`),
    whose services are stopped at teardown."""
    runner = ServiceRunner(
        Home.resolve(tmp_path / "fresh"), _base_env(Home.resolve(tmp_path / "fresh"))
    )
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture
def services(home: Home) -> Iterator[ServiceRunner]:
    """Real services of the `home` fixture's installation; all stopped at teardown."""
    runner = ServiceRunner(home, _base_env(home))
    try:
        yield runner
    finally:
        runner.stop_all()


ECHO = "tests.e2e.conftest:EchoService"


@pytest.fixture
def echo_services(home: Home) -> Iterator[ServiceRunner]:
    """Like `services`, but every service name runs EchoService (tests of the runtime)."""
    registry = {name: ECHO for name in SERVICE_NAMES}
    runner = ServiceRunner(home, _base_env(home, registry))
    try:
        yield runner
    finally:
        runner.stop_all()


# --------------------------------------------------------------------------- test service


def echo_endpoints(settings: Settings, name: str, server: str) -> list[IPEndPoint]:
    srv = settings.server(server)
    if name == IMAP4:
        return list(srv.ImapSettings.UnencryptedOrTLSBindings)
    if name == POP3:
        return list(srv.PopSettings.UnencryptedOrTLSBindings)
    if name == IMAP4BE:
        return [IPEndPoint(srv.BackEndAddress, srv.ImapBackEndPort)]
    if name == POP3BE:
        return [IPEndPoint(srv.BackEndAddress, srv.PopBackEndPort)]
    if name == WEB:
        return list(srv.OwaVirtualDirectory.Bindings)
    if name == DELIVERY:
        return [IPEndPoint(srv.BackEndAddress, srv.DeliveryPort)]
    if name == REPLICATION:
        return [IPEndPoint(srv.BackEndAddress, srv.MailboxReplicationPort)]
    if name != SUBMISSION:
        return []  # a service without listeners of its own (MSExchangeADTopology)
    return [ep for c in settings.frontend_connectors(server).values() for ep in c.Bindings]


class EchoService(Service):
    """A line service for runtime tests: greets with the Banner in force at connect time,
    answers `BANNER` with the banner in force now, echoes other lines, says BYE on stop."""

    async def start(self) -> None:
        self.sessions: set[asyncio.StreamWriter] = set()
        self.listeners = ListenerSet(lambda _tls: self.handle)
        if os.environ.get("ECHO_FAIL_START"):
            raise RuntimeError(os.environ["ECHO_FAIL_START"])
        await self.listeners.reconcile(
            echo_endpoints(self.ctx.settings, self.ctx.name, self.ctx.server), [], None
        )

    def banner(self) -> str:
        return self.ctx.server_settings.ImapSettings.Banner

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions.add(writer)
        try:
            writer.write(f"* OK {self.banner()}\r\n".encode())
            while line := await reader.readline():
                text = line.decode().strip()
                if text.upper() == "QUIT":
                    break
                reply = self.banner() if text.upper() == "BANNER" else text
                writer.write(f"{reply}\r\n".encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.sessions.discard(writer)
            writer.close()

    async def reload(self, old: Settings, new: Settings) -> None:
        await self.listeners.reconcile(
            echo_endpoints(new, self.ctx.name, self.ctx.server), [], None
        )

    async def stop(self, grace: float) -> None:
        if os.environ.get("ECHO_HANG_STOP"):
            time.sleep(3600)  # a service wedged in a blocking call: only SIGKILL ends it
        self.listeners.close()
        for writer in list(self.sessions):
            writer.write(b"* BYE server shutting down\r\n")
            writer.close()

    def status(self) -> dict[str, Any]:
        return {"connections": len(self.sessions), "endpoints": self.listeners.endpoints}
