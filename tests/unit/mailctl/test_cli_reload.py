"""After a settings write the CLI tells the running services to reload at once
(server.control.services.signal_reload), only when something was written and something runs.
That the services reload on SIGHUP (and by watching the file) is the runtime's to test."""

from __future__ import annotations

import pytest

from server.control import services as control
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok


@pytest.fixture
def signalled(monkeypatch: pytest.MonkeyPatch) -> list[Home]:
    calls: list[Home] = []
    monkeypatch.setattr(control, "signal_reload", lambda home: calls.append(home) or 1)
    return calls


def pretend_running(home: Home) -> None:
    home.run.mkdir(parents=True, exist_ok=True)
    home.pid_file("MSExchangePOP3", "MBX01").write_text("999999\n")


def test_a_write_signals_the_running_services(home: Home, signalled: list[Home]) -> None:
    pretend_running(home)
    ok(home, "Set-PopSettings", "-Banner", "hello")
    ok(home, "Set-ReceiveConnector", "Client Frontend MBX01", "-MaxMessageSize", "20MB")
    ok(home, "disable-imap4", "--startup-type", "Disabled")
    assert [h.root for h in signalled] == [home.root] * 3


def test_no_signal_without_a_change_a_write_or_a_running_service(
    home: Home, signalled: list[Home]
) -> None:
    ok(home, "Set-PopSettings", "-Banner", "hello")  # nothing runs: not even looked up
    pretend_running(home)
    ok(home, "Set-PopSettings", "-Banner", "hello")  # no change
    ok(home, "Set-PopSettings", "-Banner", "other", "-WhatIf")
    assert mailctl(home, "Set-PopSettings", "-LoginType", "nope").code == 2
    assert signalled == []
