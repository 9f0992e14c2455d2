"""A handed-over IMAP login opened on the back end's event loop (open_login_now): only when
nothing on the way can block, and with every refusal exactly as the worker thread's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.moves import fence
from server.settings.models import IMAP4BE, DirectorySettings
from server.settings.paths import Home
from tests.e2e.frontend_support import add_mailboxes, make_home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    return home


@pytest.fixture
def backend(home: Home, in_process: Any) -> Iterator[Any]:
    with in_process(IMAP4BE, home) as svc:
        yield svc


def now(svc: Any, mailbox: str) -> Any:
    async def call() -> Any:  # on the service's loop, as the hand-off channel calls it
        return svc.service.open_login_now(mailbox)

    return svc.call(call())


@pytest.mark.parametrize("mailbox", ["nobody", "carol", "Administrator", "guest", "anon", ""])
def test_refusals_are_the_worker_threads_refusals(backend: Any, mailbox: str) -> None:
    refused = backend.service.open_login(mailbox)
    assert isinstance(refused, str)
    assert now(backend, mailbox) == refused


def test_a_mailbox_is_opened_in_place_once_the_process_has_it_open(backend: Any) -> None:
    assert now(backend, "bob") is None  # a first open reads the disk: a worker thread's job
    login = backend.service.open_login("bob")
    assert not isinstance(login, str)
    again = now(backend, "BOB@contoso.test")
    assert again is not None and not isinstance(again, str)
    assert again.name == "bob" and again.store is login.store


def test_a_fence_raised_after_the_open_refuses_in_place_too(home: Home, backend: Any) -> None:
    assert not isinstance(backend.service.open_login("bob"), str)
    fence.raise_fence(home, "MBX01", "bob", "MBX02")
    refused = now(backend, "bob")
    assert isinstance(refused, str) and "being moved" in refused
    assert refused == backend.service.open_login("bob")


def test_an_ldap_directory_always_goes_to_a_worker_thread(backend: Any) -> None:
    assert not isinstance(backend.service.open_login("bob"), str)
    ctx = backend.service.ctx
    plain = ctx.settings
    ctx.settings = plain.model_copy(
        update={"Directory": DirectorySettings(Uri="ldap://127.0.0.1:9", BaseDN="dc=contoso")}
    )
    try:
        assert now(backend, "bob") is None  # a lookup there is a search on the network
        assert now(backend, "nobody") is None
    finally:
        ctx.settings = plain
