"""The runtime in-process: reload bookkeeping, run files, the settings watch, process checks."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from server.control import services as control
from server.runtime.main import (
    Runtime,
    control_address,
    query_control,
    read_pid_file,
    write_pid_file,
)
from server.runtime.reload import SettingsWatcher, is_relevant
from server.runtime.service import Service
from server.settings import store
from server.settings.models import IMAP4BE, Settings
from server.settings.paths import Home

RECORDER = f"{__name__}:Recorder"


class Recorder(Service):
    """Remembers the reloads it was asked to apply; can be told to reject them."""

    fail_reload = False

    async def start(self) -> None:
        self.reloads: list[tuple[str, str]] = []

    async def reload(self, old: Settings, new: Settings) -> None:
        if self.fail_reload:
            raise OSError(98, "cannot listen on 127.0.0.1:1: Address already in use")
        self.reloads.append(
            (old.server("MBX01").ImapSettings.Banner, new.server("MBX01").ImapSettings.Banner)
        )

    async def stop(self, grace: float) -> None:
        self.stopped = grace

    def status(self) -> dict[str, Any]:
        return {"connections": 3, "endpoints": ["127.0.0.1:1143"], "extra": "x"}


def set_banner(home: Home, banner: str) -> None:
    with store.edit(home) as session:
        session.set(("Servers", "MBX01", "ImapSettings", "Banner"), banner)


def break_settings(home: Home) -> int:
    """A hand edit with an invalid value; returns its line number."""
    lines = home.settings_file.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LoginType"))
    lines[at] = 'LoginType = "NoSuchLoginType"'
    store.atomic_write(home.settings_file, ("\n".join(lines) + "\n").encode())
    return at + 1


async def started(home: Home) -> Runtime:
    runtime = Runtime(IMAP4BE, "mbx01", home, RECORDER)
    await runtime.start()
    return runtime


def test_start_writes_run_files_and_stop_removes_them(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        assert runtime.server == "MBX01"  # the settings' spelling
        record = read_pid_file(home, IMAP4BE, "MBX01")
        assert record and record.pid == os.getpid()
        assert record.create_time == psutil.Process().create_time()
        state = json.loads(home.state_file(IMAP4BE, "MBX01").read_text())
        assert state["Endpoints"] == ["127.0.0.1:1143"] and state["Connections"] == 3
        assert state["SettingsVersion"] == store.load(home).version
        live = await asyncio.to_thread(query_control, home, IMAP4BE, "MBX01")
        assert live and live["Extra"] == {"extra": "x"} and live["LastReload"]["Result"] == "OK"
        await runtime.stop(0.5)
        assert runtime.service.stopped == 0.5
        assert not home.pid_file(IMAP4BE, "MBX01").exists()
        assert not home.state_file(IMAP4BE, "MBX01").exists()

    asyncio.run(scenario())


def test_reload_applies_valid_changes_and_keeps_the_last_good_settings(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        service = runtime.service
        first = runtime.ctx.version
        set_banner(home, "second")
        await runtime.reload()
        assert service.reloads[-1][1] == "second" and runtime.ctx.version != first
        good = runtime.ctx.version

        await runtime.reload()  # nothing changed: the service is not bothered
        assert len(service.reloads) == 1

        line = break_settings(home)
        await runtime.reload()
        assert runtime.ctx.version == good
        assert runtime.ctx.settings.server("MBX01").ImapSettings.Banner == "second"
        assert runtime.last_reload["Result"] == "Error"
        assert (
            runtime.last_reload["Line"] == line and f"line {line}" in runtime.last_reload["Error"]
        )
        state = json.loads(home.state_file(IMAP4BE, "MBX01").read_text())
        assert state["LastReload"]["Line"] == line  # reported through the state file too

        text = home.settings_file.read_text().replace('"NoSuchLoginType"', '"SecureLogin"')
        store.atomic_write(home.settings_file, text.encode())
        await runtime.reload()
        assert runtime.last_reload["Result"] == "OK"
        await runtime.stop(0)

    asyncio.run(scenario())


def test_reload_records_a_service_that_rejects_the_change(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        runtime.service.fail_reload = True
        set_banner(home, "x")
        await runtime.reload()
        assert runtime.last_reload["Result"] == "Error"
        assert "Address already in use" in runtime.last_reload["Error"]
        await runtime.stop(0)

    asyncio.run(scenario())


def test_a_failed_reload_stays_failed_and_the_old_version_stays_in_force(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        before = runtime.ctx.version
        runtime.service.fail_reload = True
        set_banner(home, "x")
        await runtime.reload()
        await runtime.reload()  # the SIGHUP mailctl sends after the write, another event
        assert runtime.last_reload["Result"] == "Error", runtime.last_reload
        assert "Address already in use" in runtime.last_reload["Error"]
        assert runtime.ctx.version == before
        assert runtime.ctx.settings.server("MBX01").ImapSettings.Banner != "x"
        state = json.loads(home.state_file(IMAP4BE, "MBX01").read_text())
        assert state["SettingsVersion"] == before and state["LastReload"]["Result"] == "Error"
        runtime.service.fail_reload = False  # the port was freed: the next reload applies it
        await runtime.reload()
        assert runtime.last_reload["Result"] == "OK"
        assert runtime.ctx.version == store.load(home).version != before
        await runtime.stop(0)

    asyncio.run(scenario())


def test_removed_server_is_an_error_not_a_crash(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        text = home.settings_file.read_text().replace("MBX01", "MBX02")
        store.atomic_write(home.settings_file, text.encode())
        await runtime.reload()
        assert "no longer in settings" in runtime.last_reload["Error"]
        await runtime.stop(0)

    asyncio.run(scenario())


def test_the_watch_reloads_after_a_write_and_sighup_too(home: Home) -> None:
    async def scenario() -> None:
        runtime = await started(home)
        service = runtime.service
        saved = runtime.write_state
        done = asyncio.Event()

        def write_state() -> None:
            saved()
            done.set()

        runtime.write_state = write_state  # type: ignore[method-assign]
        set_banner(home, "watched")
        await asyncio.wait_for(done.wait(), 5)
        assert service.reloads == [("The Microsoft Exchange IMAP4 service is ready.", "watched")]

        # SIGHUP reaches the same reload (the watch would too; the count shows it ran).
        runtime._watcher.close()
        done.clear()
        set_banner(home, "hup")
        os.kill(os.getpid(), 1)
        await asyncio.wait_for(done.wait(), 5)
        assert service.reloads[-1][1] == "hup"
        await runtime.stop(0)

    asyncio.run(scenario())


def test_watcher_ignores_unrelated_files_and_sees_secrets(home: Home) -> None:
    assert is_relevant(home, home.settings_file)
    assert is_relevant(home, home.secrets / "passwords.json")
    assert not is_relevant(home, home.secrets / ".passwords.json.12.tmp")
    assert not is_relevant(home, home.root / ".settings.toml.12.tmp")
    assert not is_relevant(home, home.run / "x.pid")

    async def scenario() -> int:
        fired = asyncio.Event()
        count = 0

        def changed() -> None:
            nonlocal count
            count += 1
            fired.set()

        watcher = SettingsWatcher(home, changed)
        await watcher.start()
        (home.root / "notes.txt").write_text("unrelated")
        (home.run / "other.pid").write_text("1")
        (home.secrets / "proxy.secret").write_text("s")
        await asyncio.wait_for(fired.wait(), 5)
        watcher.close()
        return count

    assert asyncio.run(scenario()) == 1


def test_pid_files_and_process_checks(home: Home) -> None:
    record = write_pid_file(home, IMAP4BE, "MBX01")
    assert read_pid_file(home, IMAP4BE, "MBX01") == record
    # This test process is alive with the right create time, but it is not the service.
    assert control.find_process(home, IMAP4BE, "MBX01") is None
    home.pid_file(IMAP4BE, "MBX01").write_text("garbage")
    assert read_pid_file(home, IMAP4BE, "MBX01") is None

    ours = [
        "/usr/bin/python3",
        "-m",
        "server",
        "run",
        IMAP4BE,
        "--server",
        "MBX01",
        "--home",
        str(home.root),
    ]
    assert control._is_our_command(ours, home, IMAP4BE, "mbx01")
    assert not control._is_our_command(ours, home, "MSExchangePOP3BE", "MBX01")
    assert not control._is_our_command(ours, Home(Path("/elsewhere")), IMAP4BE, "MBX01")
    assert not control._is_our_command(["sleep", "100"], home, IMAP4BE, "MBX01")


def test_control_socket_address_fits_sun_path(tmp_path: Path) -> None:
    short = Home(Path("/tmp/h"))
    assert control_address(short, IMAP4BE, "MBX01") == "/tmp/h/run/MBX01.MSExchangeIMAP4BE.sock"
    deep = Home(tmp_path / ("d" * 120))
    address = control_address(deep, IMAP4BE, "MBX01")
    assert address.startswith("\0mailctl.") and len(address) < 108


def test_names_and_servers(settings: Settings) -> None:
    assert control.canonical_name("msexchangeimap4be") == IMAP4BE
    with pytest.raises(control.ControlError, match="Cannot find any service"):
        control.canonical_name("nope")
    assert control.resolve_server(settings, "mbx01") == "MBX01"
    with pytest.raises(control.ControlError, match="no server"):
        control.resolve_server(settings, "MBX09")
