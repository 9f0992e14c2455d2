"""Shared fixtures: fresh home folders on free loopback ports, services run in-process."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.settings import store
from server.settings.models import PortPlan, Settings, default_settings
from server.settings.paths import Home

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "cpython-email"


def _ports_free(plan: PortPlan, address: str) -> bool:
    for value in plan.model_dump().values():
        if isinstance(value, int) and not isinstance(value, bool):
            sock = socket.socket()
            # As ListenerSet binds: a port whose old connections sit in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, value))
            except OSError:
                return False
            finally:
                sock.close()
    return True


def free_port_plan(address: str = "127.0.0.1", backend_address: str = "127.0.0.1") -> PortPlan:
    """Exchange's port layout shifted to a base where every port is free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 58000, 2000) + rng.randrange(0, 3) * 7
        plan = PortPlan.shifted(base, loopback_only=True, bind_address=address,
                                backend_address=backend_address)
        if _ports_free(plan, address):
            return plan
    raise RuntimeError("no free port range")


def make_home(path: Path, server: str = "MBX01", domain: str = "contoso.test") -> Home:
    home = Home.resolve(path)
    store.create(home, default_settings(server=server, domain=domain, ports=free_port_plan()))
    return home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh home folder: default organization, one server MBX01, free loopback ports."""
    return make_home(tmp_path / "home")


@pytest.fixture
def settings(home: Home) -> Settings:
    return store.load(home).settings


class InProcessService:
    """Runs one service class on its own event loop thread, for tests that do not need a
    separate process (start/stop through mailctl is tested in tests/e2e)."""

    def __init__(self, name: str, home: Home, server: str = "MBX01") -> None:
        self.name, self.home, self.server = name, home, server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service = None

    def call(self, coro):  # run a coroutine on the service loop and wait for it
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def __enter__(self) -> InProcessService:
        from server.runtime.service import ServiceContext, load_service_class

        self.thread.start()
        snap = store.load(self.home)
        ctx = ServiceContext(self.name, self.server, self.home, snap.settings, snap.version)

        async def build():
            service = load_service_class(self.name)(ctx)
            await service.start()
            return service

        self.service = self.call(build())
        return self

    def reload(self) -> None:
        snap = store.load(self.home)
        old = self.service.ctx.settings
        self.service.ctx.settings, self.service.ctx.version = snap.settings, snap.version
        self.call(self.service.reload(old, snap.settings))

    def __exit__(self, *exc: object) -> None:
        if self.service is not None:
            self.call(self.service.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def in_process() -> Iterator[type[InProcessService]]:
    yield InProcessService


