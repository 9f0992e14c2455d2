"""The per-login path through the hand-off channel (server/backend/handoff.py): a mailbox
the back end has open is opened in the LOGIN record's callback, the first open still in a
worker thread, and a session that logs out at once never subscribes to wake-ups."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings.models import IMAP4, IMAP4BE
from server.settings.paths import Home
from server.settings.types import LoginType
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, configure, make_home, ports


@pytest.fixture
def imap(tmp_path: Path, in_process: Any) -> Iterator[tuple[Any, Any, Home]]:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    configure(home, "IMAP", LoginType=LoginType.PlainTextLogin)
    with in_process(IMAP4BE, home) as backend, in_process(IMAP4, home) as front:
        yield front, backend, home


def session(home: Home, user: str, *, select: bool = False, noop: bool = False) -> None:
    client = imaplib.IMAP4("127.0.0.1", ports(home, "IMAP")[0])
    try:
        assert client.login(user, PASSWORD)[0] == "OK"
        if noop:
            assert client.noop()[0] == "OK"
        if select:
            assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()


def test_only_a_mailboxs_first_open_takes_a_worker_thread(
    imap: tuple[Any, Any, Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, backend, home = imap
    service = backend.service
    threaded: list[str] = []
    in_thread = service.open_login

    def counted(mailbox: str) -> Any:
        threaded.append(mailbox)
        return in_thread(mailbox)

    monkeypatch.setattr(service, "open_login", counted)
    session(home, "bob", noop=True)
    session(home, "bob", select=True)
    session(home, "BOB@contoso.test")
    assert threaded == ["bob"]
    session(home, "alice")
    assert threaded == ["bob", "alice"]


def test_a_login_logout_session_subscribes_to_nothing(
    imap: tuple[Any, Any, Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, backend, home = imap
    wakeups = backend.service.wakeups
    added: list[object] = []
    add = wakeups.add

    def counted(box: Any, connection: Any) -> Any:
        added.append(box)
        return add(box, connection)

    monkeypatch.setattr(wakeups, "add", counted)
    session(home, "alice")
    session(home, "alice")
    assert added == []
    session(home, "alice", select=True)
    assert len(added) == 1
