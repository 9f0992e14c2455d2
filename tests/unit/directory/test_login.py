"""LoginGate: the one password check with the failed-login slow-down (server/directory/login.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.directory import DirectoryUnavailable, Entry
from server.directory.login import LoginGate, LoginResult
from server.directory.throttle import LoginThrottle
from server.settings.models import Mailbox, Settings, default_settings
from server.settings.types import MailboxType

PASSWORD = "correct horse"


def _settings() -> Settings:
    settings = default_settings()
    settings.Mailboxes["bob"] = Mailbox(PrimarySmtpAddress="bob@contoso.test", Server="MBX01")
    settings.Mailboxes["guest"] = Mailbox(
        PrimarySmtpAddress="guest@contoso.test", Server="MBX01", Type=MailboxType.Guest
    )
    return settings


class FakeDirectory:
    """Right password: PASSWORD. Records which check answered, and can be down."""

    def __init__(self, cached: bool = False, down: bool = False) -> None:
        self.cached, self.down = cached, down
        self.calls: list[str] = []

    def _entry(self, settings: Settings, identity: str) -> Entry | None:
        found = settings.mailbox(identity)
        if found is None:
            return None
        name, box = found
        return Entry(name, box, settings.Servers["MBX01"], "MBX01")

    def verify(self, settings: Settings, identity: str, password: str) -> Entry | None:
        self.calls.append("verify")
        if self.down:
            raise DirectoryUnavailable("ldap://dc01: timed out")
        return self._entry(settings, identity) if password == PASSWORD else None

    def verify_cached(self, settings: Settings, identity: str, password: str) -> Entry | None:
        self.calls.append("verify_cached")
        if self.cached and password == PASSWORD:
            return self._entry(settings, identity)
        return None


class Waits:
    """Stands in for asyncio.sleep: records the slow-down instead of waiting it out."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def _gate(directory: FakeDirectory) -> tuple[LoginGate, Waits]:
    waits = Waits()
    throttle = LoginThrottle(base=0.5, cap=8.0, clock=lambda: 0.0)
    return LoginGate(directory, throttle, sleep=waits), waits


def _anyone(_entry: Entry) -> str | None:
    return None


def _login(
    gate: LoginGate,
    user: str,
    password: str,
    allowed: Callable[[Entry], str | None] = _anyone,
) -> LoginResult:
    return asyncio.run(gate.login(_settings(), "192.0.2.1", user, password, allowed))


def test_right_password_logs_in_without_waiting() -> None:
    gate, waits = _gate(FakeDirectory())
    result = _login(gate, "bob", PASSWORD)
    assert result.entry is not None and result.entry.name == "bob"
    assert result.reason is None
    assert waits.seconds == []


def test_failures_make_the_next_attempt_wait_longer_whatever_the_spelling() -> None:
    gate, waits = _gate(FakeDirectory())
    for user in ("bob", "BOB", "bob@contoso.test"):
        assert _login(gate, user, "wrong").entry is None
    assert waits.seconds == [0.5, 1.0]
    # The right password still gets in after the wait; success clears the account's score.
    assert _login(gate, "bob", PASSWORD).entry is not None
    assert waits.seconds == [0.5, 1.0, 2.0]
    assert gate.throttle.delay("192.0.2.9", "bob") == 0


def test_unknown_user_is_slowed_like_a_known_one() -> None:
    gate, waits = _gate(FakeDirectory())
    _login(gate, "nobody", "x")
    _login(gate, "nobody", "x")
    assert waits.seconds == [0.5]


def test_refused_mailbox_counts_as_a_failure_and_the_reason_goes_to_the_caller() -> None:
    gate, waits = _gate(FakeDirectory())

    def no_guests(entry: Entry) -> str | None:
        return "Guest mailboxes cannot log in" if entry.mailbox.Type is MailboxType.Guest else None

    result = _login(gate, "guest", PASSWORD, allowed=no_guests)
    assert result.entry is None
    assert result.reason == "Guest mailboxes cannot log in"
    # A wrong password for the same mailbox says nothing about its kind.
    assert _login(gate, "guest", "wrong", allowed=no_guests).reason is None
    assert waits.seconds == [0.5]


def test_a_password_verified_before_skips_the_worker_thread() -> None:
    directory = FakeDirectory(cached=True)
    gate, _ = _gate(directory)
    assert _login(gate, "bob", PASSWORD).entry is not None
    assert directory.calls == ["verify_cached"]
    assert _login(gate, "bob", "wrong").entry is None
    assert directory.calls == ["verify_cached", "verify_cached", "verify"]


def test_directory_down_raises_and_scores_nothing() -> None:
    gate, waits = _gate(FakeDirectory(down=True))
    for _ in range(3):
        with pytest.raises(DirectoryUnavailable):
            _login(gate, "bob", PASSWORD)
    assert waits.seconds == []
    assert gate.throttle.delay("192.0.2.1", "bob") == 0


def test_each_service_default_gate_has_its_own_throttle() -> None:
    first, second = LoginGate(FakeDirectory()), LoginGate(FakeDirectory())
    assert first.throttle is not second.throttle
