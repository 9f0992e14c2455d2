"""Live reload of running service processes: settings changes apply without a restart and
without dropping a connection; a broken settings.toml is reported and the last good one stays.

A reload has no signal of its own for the test to wait on, so the tests wait on its effect
(the control socket's LastReload, a new connection's greeting) with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable

import pytest

from server.runtime.main import query_control
from server.settings import store
from server.settings.models import IMAP4, IMAP4BE

from .conftest import ServiceRunner

pytestmark = pytest.mark.e2e


def until(condition: Callable[[], object], timeout: float = 5.0) -> float:
    """Seconds until `condition()` is true; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


def greeting(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(300).decode()


def set_imap(runner: ServiceRunner, key: str, value: object) -> None:
    with store.edit(runner.home) as session:
        session.set(("Servers", "MBX01", "ImapSettings", key), value)


def test_broken_settings_leave_the_service_up_and_get_service_reports_the_line(
    echo_services: ServiceRunner,
) -> None:
    runner = echo_services
    runner.run_ok("start-service", IMAP4BE)
    port = runner.settings.server("MBX01").ImapBackEndPort
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.recv(200)
    good_version = store.load(runner.home).version

    # A hand edit with an invalid value, written the way editors do (replace the file).
    lines = runner.home.settings_file.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("MaxConnections"))
    lines[at] = "MaxConnections = -5"
    store.atomic_write(runner.home.settings_file, ("\n".join(lines) + "\n").encode())

    def reload_failed() -> bool:
        live = query_control(runner.home, IMAP4BE, "MBX01") or {}
        return (live.get("LastReload") or {}).get("Result") == "Error"

    until(reload_failed)
    [row] = json.loads(runner.run_ok("get-service", IMAP4BE, "-o", "json").stdout)
    assert row["Status"] == "Running"
    assert row["SettingsVersion"] == good_version
    assert row["LastReloadLine"] == at + 1
    assert row["LastReload"].startswith("Error") and f"line {at + 1}" in row["LastReload"]
    assert "MaxConnections" in row["LastReload"]
    table = runner.run_ok("get-service", IMAP4BE, "-o", "list").stdout
    assert f"line {at + 1}" in table

    client.sendall(b"still there\r\n")  # the established connection was not dropped
    assert client.recv(200) == b"still there\r\n"
    assert "IMAP4 service is ready" in greeting(port)  # new ones get the last good settings

    lines[at] = "MaxConnections = 100"
    store.atomic_write(runner.home.settings_file, ("\n".join(lines) + "\n").encode())
    until(lambda: not reload_failed())
    [row] = json.loads(runner.run_ok("get-service", IMAP4BE, "-o", "json").stdout)
    assert row["LastReload"] == "OK" and row["SettingsVersion"] != good_version
    client.close()


def test_bindings_move_without_dropping_connections(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.run_ok("start-service", IMAP4)
    old_port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port
    client = socket.create_connection(("127.0.0.1", old_port), timeout=5)
    client.recv(200)
    new_port = old_port + 1
    runner.run_ok("set-imapsettings", "--unencrypted-or-tls-bindings", f"127.0.0.1:{new_port}")

    def moved() -> bool:
        try:
            return "OK" in greeting(new_port)
        except OSError:
            return False

    assert until(moved) < 1.0
    with pytest.raises(OSError):
        greeting(old_port)  # the removed binding is closed ...
    client.sendall(b"hello\r\n")  # ... but its accepted connection lives on
    assert client.recv(200) == b"hello\r\n"
    client.close()
    info = runner.get(IMAP4)
    assert info.Endpoints == [f"127.0.0.1:{new_port}"]


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, await asyncio.wait_for(reader.readline(), 5)


async def _many_sessions_while_settings_change(
    runner: ServiceRunner,
    port: int,
    sessions: int = 200,
    changes: int = 20,
    logins: int = 0,
) -> list[float]:
    """`sessions` open connections, the first `logins` of them logged in (relayed to the back
    end), while `changes` Banner changes land; each must greet the next connection within
    1 s, and every session must still answer at the end."""
    opened = [await _open(port) for _ in range(sessions)]
    assert all(g.startswith(b"* OK") for _, _, g in opened)
    for number, (reader, writer, _) in enumerate(opened[:logins]):
        writer.write(f"l{number} LOGIN alice Alice-pass-1\r\n".encode())
        while not (line := await asyncio.wait_for(reader.readline(), 10)).startswith(b"l"):
            pass
        assert line.startswith(f"l{number} OK".encode()), line
    delays = []
    for change in range(changes):
        banner = f"Change number {change} is in force."
        await asyncio.to_thread(set_imap, runner, "Banner", banner)
        start = time.monotonic()
        while True:
            reader, writer, first = await _open(port)
            writer.close()
            if banner.encode() in first:
                break
            assert time.monotonic() - start < 1.0, f"change {change} not visible within 1 s"
            await asyncio.sleep(0.01)
        delays.append(time.monotonic() - start)
        # Old sessions keep working between changes.
        reader, writer, _ = opened[change * 7 % sessions]
        writer.write(f"c{change} NOOP\r\n".encode())
        while not (line := await asyncio.wait_for(reader.readline(), 5)).startswith(b"c"):
            pass  # untagged updates from the back end
        assert line.startswith(f"c{change} ".encode())
    for number, (_reader, writer, _) in enumerate(opened):
        writer.write(f"n{number} NOOP\r\n".encode())
    for number, (reader, writer, _) in enumerate(opened):
        while (line := await asyncio.wait_for(reader.readline(), 10)).startswith(b"*"):
            pass
        assert line.startswith(f"n{number} ".encode()), f"session {number} was dropped: {line!r}"
        writer.close()
    return delays


def test_200_sessions_stay_up_while_20_changes_land_echo(echo_services: ServiceRunner) -> None:
    """The runtime alone, with EchoService."""
    runner = echo_services
    runner.run_ok("start-service", IMAP4)
    port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port
    delays = asyncio.run(_many_sessions_while_settings_change(runner, port))
    assert max(delays) < 1.0
    info = runner.get(IMAP4)
    assert info.Status == "Running" and info.LastReload and info.LastReload["Result"] == "OK"


def test_200_imap_sessions_stay_up_while_20_changes_land(services: ServiceRunner) -> None:
    """The real IMAP4 pair: 190 sessions before login on the front end and 10 logged in and
    relayed to the back end; both services reload twenty times, nobody is dropped."""
    runner = services
    runner.new_mailbox("alice", "Alice-pass-1")
    port = runner.start_imap_plain()
    delays = asyncio.run(_many_sessions_while_settings_change(runner, port, logins=10))
    assert max(delays) < 1.0
    version = store.load(runner.home).version
    for name in (IMAP4, IMAP4BE):
        info = runner.get(name)
        assert info.Status == "Running" and info.SettingsVersion == version
        assert info.LastReload and info.LastReload["Result"] == "OK"


def test_protocol_logging_switches_on_and_off_live(services: ServiceRunner) -> None:
    """The real POP3 back end: Set-PopSettings -ProtocolLogEnabled applies to the next
    command, no restart; the file is Exchange's CSV in logs/ProtocolLog/Pop3."""
    from server.directory import proxy_secret
    from tests.e2e.handover_support import hand_over, read_line

    runner = services
    with store.edit(runner.home) as doc:
        doc.set(
            ("Mailboxes", "alice"), {"PrimarySmtpAddress": "alice@contoso.test", "Server": "MBX01"}
        )
    secret = proxy_secret(runner.home)
    runner.run_ok("start-service", "MSExchangePOP3BE")
    port = runner.settings.server("MBX01").PopBackEndPort
    folder = runner.home.logs / "ProtocolLog" / "Pop3"

    def session(command: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            hand_over(sock, secret, "alice", "POP3", client=("192.0.2.7", 40000))
            read_line(sock)
            sock.sendall(command + b"\r\nQUIT\r\n")
            while sock.recv(300):
                pass

    def logged(word: str) -> bool:
        return folder.is_dir() and any(
            f",{word}," in p.read_text().lower() for p in folder.glob("POP3BE*.LOG")
        )

    session(b"CAPA")
    runner.run_ok("set-popsettings", "--protocol-log-enabled", "$true")
    until(lambda: runner.get("MSExchangePOP3BE").SettingsVersion == store.load(runner.home).version)
    session(b"NOOP")
    until(lambda: logged("noop"))  # buffered: reaches the file within a second
    [path] = folder.glob("POP3BE*.LOG")
    text = path.read_text()
    assert "#Log-type: POP3 Protocol Log" in text and ",capa," not in text.lower()
    assert "192.0.2.7:40000" in text

    runner.run_ok("set-popsettings", "--protocol-log-enabled", "$false")
    until(lambda: runner.get("MSExchangePOP3BE").SettingsVersion == store.load(runner.home).version)
    session(b"STAT")
    runner.run_ok("stop-service", "MSExchangePOP3BE")  # flushes whatever is buffered
    assert not logged("stat")


def test_a_broken_settings_file_does_not_prevent_stopping(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.run_ok("start-service", IMAP4BE)
    pid = runner.get(IMAP4BE).Pid
    runner.home.settings_file.write_text(runner.home.settings_file.read_text() + "\n[broken\n")
    out = runner.run_ok("stop-service", IMAP4BE, "--server", "mbx01").stdout
    assert "was not running" not in out
    [row] = json.loads(runner.run_ok("get-service", IMAP4BE, "-o", "json").stdout)
    assert row["Status"] == "Stopped" and row["Server"] == "MBX01"
    assert pid is not None and not runner.home.pid_file(IMAP4BE, "MBX01").exists()
    bad = runner.mailctl("start-service", IMAP4BE)
    assert bad.returncode == 1 and "not valid TOML" in bad.stderr
