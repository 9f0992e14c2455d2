"""Service control through the CLI: start, inspect, stop, kill -9, stale pid files, failures.

These run EchoService (tests/e2e/conftest.py) in place of the real classes, so they test the
runtime and mailctl, not the protocols; test_service_control_lifecycle.py runs the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from server.control import services as control
from server.runtime.main import read_pid_file
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
)
from server.settings.names import TOPOLOGY, default_startup
from server.settings.paths import Home

from .conftest import ServiceRunner

pytestmark = pytest.mark.e2e

STARTUP = {
    IMAP4BE: "Automatic",
    IMAP4: "Automatic",
    POP3BE: "Manual",
    POP3: "Manual",
    SUBMISSION: "Disabled",
    WEB: "Manual",
    DELIVERY: "Automatic",
    REPLICATION: "Manual",
    TOPOLOGY: "Manual",  # a one-host install has no organization to copy settings from
}


def get_json(runner: ServiceRunner, *args: str) -> list[dict]:
    return json.loads(runner.run_ok("get-service", *args, "--output", "json").stdout)


def backend_port(runner: ServiceRunner) -> int:
    return runner.settings.server("MBX01").ImapBackEndPort


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert sock.recv(200).startswith(b"* OK")
    return sock


def test_start_inspect_stop_through_the_cli(echo_services: ServiceRunner) -> None:
    runner = echo_services
    out = runner.run_ok("start-service", "msexchangeimap4be").stdout
    assert "Running" in out
    client = connect(backend_port(runner))  # ready means accepting, no wait needed

    [row] = get_json(runner, "MSExchangeIMAP4BE")
    assert row["Status"] == "Running" and row["Name"] == IMAP4BE
    assert row["DisplayName"] == "Microsoft Exchange IMAP4 Backend"
    assert row["StartupType"] == "Manual"
    assert psutil.Process(row["Pid"]).is_running()
    assert row["Endpoints"] == [f"127.0.0.1:{backend_port(runner)}"]
    assert row["Connections"] == 1
    assert row["MemoryRSS"] > 1_000_000 and row["UptimeSeconds"] >= 0
    assert row["SettingsVersion"] == store.load(runner.home).version
    assert row["LastReload"] == "OK"

    rows = get_json(runner, "MSExchange*")
    assert {r["Name"]: r["Status"] for r in rows}[IMAP4] == "Stopped"
    assert len(rows) == len(SERVICE_NAMES) - 1  # all but W3SVC

    runner.run_ok("Stop-Service", "MSExchangeIMAP4BE")
    assert client.recv(200).startswith(b"* BYE")  # told goodbye, not just cut
    assert not psutil.pid_exists(row["Pid"]) or psutil.Process(row["Pid"]).status() == "zombie"
    [row] = get_json(runner, "MSExchangeIMAP4BE")
    assert row["Status"] == "Stopped" and row["Pid"] is None
    assert not runner.home.pid_file(IMAP4BE, "MBX01").exists()


def test_exchange_spelling_and_unknown_names(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.run_ok("Start-Service", "MSExchangeIMAP4BE", "-Server", "mbx01")
    assert get_json(runner, "*imap4 backend*")[0]["Status"] == "Running"
    bad = runner.mailctl("start-service", "MSExchangeNope")
    assert bad.returncode == 1 and "Cannot find any service" in bad.stderr
    bad = runner.mailctl("get-service", "--server", "NOPE")
    assert bad.returncode == 1 and "no server" in bad.stderr


def test_kill_9_shows_stopped_and_start_works_again(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.run_ok("start-service", IMAP4BE)
    [row] = get_json(runner, IMAP4BE)
    process = psutil.Process(row["Pid"])
    os.kill(row["Pid"], signal.SIGKILL)
    assert control.wait_exit(process, 10)

    [row] = get_json(runner, IMAP4BE)
    assert row["Status"] == "Stopped"  # the pid file is still there, but its process is gone
    assert runner.home.pid_file(IMAP4BE, "MBX01").exists()

    runner.run_ok("start-service", IMAP4BE)
    [again] = get_json(runner, IMAP4BE)
    assert again["Status"] == "Running" and again["Pid"] != process.pid
    connect(backend_port(runner)).close()


@pytest.mark.parametrize("same_create_time", [True, False])
def test_pid_file_of_an_unrelated_process_is_left_alone(
    echo_services: ServiceRunner, same_create_time: bool
) -> None:
    runner = echo_services
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        created = psutil.Process(bystander.pid).create_time()
        recorded = created if same_create_time else created - 1000.0
        pid_file = runner.home.pid_file(IMAP4BE, "MBX01")
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{bystander.pid}\n{recorded!r}\n")

        assert get_json(runner, IMAP4BE)[0]["Status"] == "Stopped"
        out = runner.run_ok("stop-service", IMAP4BE).stdout
        assert "was not running" in out
        runner.run_ok("stop")
        assert bystander.poll() is None, "mailctl signalled a process that is not the service"

        runner.run_ok("start-service", IMAP4BE)
        record = read_pid_file(runner.home, IMAP4BE, "MBX01")
        assert record is not None and record.pid != bystander.pid
        runner.run_ok("stop-service", IMAP4BE)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_start_fails_with_the_reason_when_the_port_is_taken(echo_services: ServiceRunner) -> None:
    runner = echo_services
    port = backend_port(runner)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        result = runner.mailctl("start-service", IMAP4BE)
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert get_json(runner, IMAP4BE)[0]["Status"] == "Stopped"
    assert not runner.home.pid_file(IMAP4BE, "MBX01").exists()


def test_start_fails_with_the_exception_of_start(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.env["ECHO_FAIL_START"] = "the mailbox database is locked"
    result = runner.mailctl("start-service", IMAP4BE)
    assert result.returncode == 1
    assert "the mailbox database is locked" in result.stderr
    log = runner.home.log_file(IMAP4BE, "MBX01").read_text()
    assert "start failed" in log


def test_disabled_service_does_not_start(echo_services: ServiceRunner) -> None:
    runner = echo_services
    with store.edit(runner.home) as session:
        session.set(("Servers", "MBX01", "Services", IMAP4BE), "Disabled")
    result = runner.mailctl("start-service", IMAP4BE)
    assert result.returncode == 1 and "disabled" in result.stderr
    assert get_json(runner, IMAP4BE)[0]["StartupType"] == "Disabled"


def test_start_starts_automatic_services_and_stop_stops_all(echo_services: ServiceRunner) -> None:
    runner = echo_services
    with store.edit(runner.home) as session:
        for name, startup in STARTUP.items():
            session.set(("Servers", "MBX01", "Services", name), startup)
    runner.run_ok("start")
    status = {r["Name"]: r["Status"] for r in get_json(runner)}
    assert status == {
        name: ("Running" if STARTUP.get(name, default_startup(name)) == "Automatic" else "Stopped")
        for name in SERVICE_NAMES
    }
    runner.run_ok("restart-service", POP3BE)  # a Manual service may still be run by hand
    runner.run_ok("stop")
    assert {r["Status"] for r in get_json(runner)} == {"Stopped"}
    assert not list(runner.home.run.glob("*.pid"))


def test_restart_service_gives_a_new_process(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.run_ok("start-service", IMAP4BE)
    first = get_json(runner, IMAP4BE)[0]["Pid"]
    runner.run_ok("restart-service", IMAP4BE)
    second = get_json(runner, IMAP4BE)[0]
    assert second["Status"] == "Running" and second["Pid"] != first


def test_install_systemd_writes_one_unit_per_service(home: Home, tmp_path) -> None:
    out = tmp_path / "units"
    written = control.install_systemd(home, out, python="/usr/bin/python3", user="mailctl")
    assert len(written) == len(control.START_ORDER)
    unit = (out / "mailctl-MBX01-MSExchangeIMAP4.service").read_text()
    assert "Type=simple" in unit
    assert (
        f"ExecStart=/usr/bin/python3 -m server run MSExchangeIMAP4 --server MBX01 "
        f"--home {home.root} --foreground"
    ) in unit
    assert "After=network-online.target mailctl-MBX01-MSExchangeIMAP4BE.service" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "User=mailctl" in unit
    assert "WantedBy=multi-user.target" in unit
    submission = (out / "mailctl-MBX01-MSExchangeFrontEndTransport.service").read_text()
    assert "After=network-online.target mailctl-MBX01-MSExchangeDelivery.service" in submission
    # The units run exactly the command line control.find_process recognizes as the service.
    command = unit.split("ExecStart=", 1)[1].splitlines()[0].split()
    assert control._is_our_command(command, home, IMAP4, "MBX01")
    # Automatic by default: transport, mailbox replication and web, as in Exchange.
    assert control.automatic_units(home) == [
        "mailctl-MBX01-MSExchangeDelivery.service",
        "mailctl-MBX01-MSExchangeMailboxReplication.service",
        "mailctl-MBX01-MSExchangeFrontEndTransport.service",
        "mailctl-MBX01-W3SVC.service",
    ]


def test_install_systemd_through_the_cli(echo_services: ServiceRunner, tmp_path) -> None:
    result = echo_services.run_ok("install-systemd", "--output-dir", str(tmp_path))
    assert "systemctl daemon-reload" in result.stdout
    assert len(list(tmp_path.glob("*.service"))) == len(control.START_ORDER)


def test_an_idle_service_costs_no_cpu(echo_services: ServiceRunner) -> None:
    """No timers and no polling: an idle service process does not wake up at all (the
    settings watch is an inotify descriptor in the event loop)."""
    runner = echo_services
    runner.run_ok("start-service", IMAP4BE)
    process = psutil.Process(get_json(runner, IMAP4BE)[0]["Pid"])
    for _ in range(50):  # let it finish answering get-service (a busy CI box is slow)
        switches = process.num_ctx_switches()
        time.sleep(0.1)
        if process.num_ctx_switches() == switches:
            break
    threads = {t.id: (t.user_time, t.system_time) for t in process.threads()}
    switches = process.num_ctx_switches()
    time.sleep(1.0)  # the quiet period being measured, not a wait for the server
    assert process.num_ctx_switches() == switches
    assert {t.id: (t.user_time, t.system_time) for t in process.threads()} == threads


def test_services_of_another_server_on_this_machine(echo_services: ServiceRunner) -> None:
    from server.settings.models import default_server

    from .conftest import reusable_port_plan

    runner = echo_services
    second = default_server("MBX02", "mbx02.contoso.test", reusable_port_plan())
    with store.edit(runner.home) as session:
        session.set(("Servers", "MBX02"), second.model_dump(mode="json"))
    runner.run_ok("Start-Service", IMAP4BE, "-Server", "MBX02")
    assert get_json(runner, IMAP4BE)[0]["Status"] == "Stopped"  # MBX01, the local one
    [row] = get_json(runner, IMAP4BE, "--server", "mbx02")
    assert row["Status"] == "Running" and row["Server"] == "MBX02"
    assert row["Endpoints"] == [f"127.0.0.1:{second.ImapBackEndPort}"]
    runner.run_ok("stop-service", IMAP4BE, "--server", "MBX02")
    assert get_json(runner, IMAP4BE, "--server", "MBX02")[0]["Status"] == "Stopped"


def test_a_wedged_service_is_killed_after_the_timeout(echo_services: ServiceRunner) -> None:
    runner = echo_services
    runner.env["ECHO_HANG_STOP"] = "1"
    runner.run_ok("start-service", IMAP4BE)
    process = psutil.Process(get_json(runner, IMAP4BE)[0]["Pid"])
    started = time.monotonic()
    runner.run_ok("stop-service", IMAP4BE, "--timeout", "1")
    assert time.monotonic() - started < 10
    assert control.wait_exit(process, 0.1)
    assert get_json(runner, IMAP4BE)[0]["Status"] == "Stopped"
    assert not runner.home.pid_file(IMAP4BE, "MBX01").exists()
