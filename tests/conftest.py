"""Shared fixtures: fresh home folders on free loopback ports, services run in-process."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.settings import store
from server.settings.models import PortPlan, Settings, default_settings
from server.settings.paths import Home

# Real-world MIME shapes written for this project (tests/data/corpus/README.md), stored with LF
# line ends: tests convert them to CRLF as the store does at delivery.
CORPUS = Path(__file__).resolve().parent / "data" / "corpus"


def corpus_paths() -> list[Path]:
    return sorted(CORPUS.glob("*.eml"))


# Listening ports are picked below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
# 32768 and up here), where outgoing connections take their local ports: a port picked there can
# be taken by some client's connection between the check and the bind. Each xdist worker gets
# its own slice, so two workers never pick overlapping layouts.
PORT_FLOOR, PORT_CEILING = 3000, 32000
PLAN_SPAN = 2000  # a PortPlan uses base+80 .. base+1995


def _worker_slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = (PORT_CEILING - PORT_FLOOR) // count
    low = PORT_FLOOR + index * width
    return low, low + width - PLAN_SPAN


def _bindable(address: str, port: int) -> bool:
    """As the services bind (SO_REUSEADDR): a port held only by TIME_WAIT is free."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _plan_ports(plan: PortPlan) -> list[int]:
    return [v for v in plan.model_dump().values() if isinstance(v, int) and not isinstance(v, bool)]


def free_port_plan(address: str = "127.0.0.1", backend_address: str | None = None) -> PortPlan:
    """Exchange's port layout shifted to a base where every port is free."""
    backend_address = backend_address or address
    low, high = _worker_slice()
    rng = random.Random()
    for _ in range(500):
        plan = PortPlan.shifted(
            rng.randrange(low, high),
            loopback_only=True,
            bind_address=address,
            backend_address=backend_address,
        )
        if all(_bindable(address, p) and _bindable(backend_address, p) for p in _plan_ports(plan)):
            return plan
    raise RuntimeError("no free port range")


def free_base_port(address: str = "127.0.0.1") -> int:
    """A base for `mailctl init --base-port` / PortPlan.shifted where every port is free."""
    return free_port_plan(address).imap - 143


def make_home(path: Path, server: str = "MBX01", domain: str = "contoso.test") -> Home:
    home = Home.resolve(path)
    store.create(home, default_settings(server=server, domain=domain, ports=free_port_plan()))
    return home


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Until `predicate()` is true, for states nothing signals (a spool file gone, a message
    in the store, a line in a log); fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


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
