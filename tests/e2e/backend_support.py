"""A back end (MSExchangeIMAP4BE or MSExchangePOP3BE) run in-process for a test, beside the
test's own handle on the server's store: the test delivers and checks through it, as the
delivery service and the other back end would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from server.directory import proxy_secret
from server.settings import store as settings_store
from server.settings.paths import Home
from server.store import open_store


@dataclass
class BackendRun:
    home: Home
    service: Any
    run: Any  # InProcessService
    store: Any  # this test's own handle on the server's mailbox database
    secret: str

    @property
    def port(self) -> int:
        return self.service.bound_port()

    def inbox(self, mailbox: str = "alice") -> Any:
        return self.store.mailbox(mailbox)

    def edit(self, change: Callable[[settings_store.Edit], None]) -> None:
        """Change the settings and reload the service with them."""
        with settings_store.edit(self.home) as doc:
            change(doc)
        self.run.reload()


Run = TypeVar("Run", bound=BackendRun)


@contextmanager
def running(kind: type[Run], service: str, home: Home, in_process: Any) -> Iterator[Run]:
    """The back end `service` of MBX01 in `home`, started and stopped around the block."""
    store = open_store(home, "MBX01")
    try:
        with in_process(service, home) as run:
            yield kind(home, run.service, run, store, proxy_secret(home))
    finally:
        store.close()
