"""Worker processes (server/runtime/workers.py). Front ends (WorkerProcesses): every process
accepts on the shared port (SO_REUSEPORT), a live reload reaches each of them, and they go
with the service process, whether it stops or is killed. Back ends (BackEndWorkerProcesses):
the front end hands each mailbox's sessions to one process by its name, and what must hold
across sessions holds across processes (IDLE sees another process's APPEND, the POP3
maildrop lock, a move's end-sessions)."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import signal
import socket
import time
from collections.abc import Callable

import psutil
import pytest

from server.directory import proxy_secret
from server.protocols.handover import HandoverRefused
from server.runtime.main import query_control
from server.runtime.status import control_request
from server.runtime.workers import route, worker_control_name
from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE
from server.settings.types import LoginType
from server.store import NewMessage, open_store
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, configure
from tests.e2e.handover_support import hand_over, read_line

from .conftest import ServiceRunner

pytestmark = pytest.mark.e2e

CONNECTIONS = 40  # all on one process of two by chance: 2**-39


def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)


def accepted_by(pids: list[int], port: int) -> dict[int, int]:
    """Established connections on `port` held by each process."""
    return {
        pid: sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
        for pid in pids
    }


def greet_many(port: int) -> tuple[list[socket.socket], list[bytes]]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CONNECTIONS)]
    return socks, [s.recv(300) for s in socks]


def test_workers_share_the_port_reload_and_stop_with_the_service(services: ServiceRunner) -> None:
    runner = services
    runner.run_ok("set-imapsettings", "--worker-processes", "2")
    runner.start(IMAP4)
    status = query_control(runner.home, IMAP4, "MBX01") or {}
    main = int(status["Pid"])
    [worker] = status["Extra"]["Workers"]
    port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port

    socks, greetings = greet_many(port)
    try:
        assert all(g.startswith(b"* OK") for g in greetings)
        until(lambda: all(accepted_by([main, worker], port).values()))
    finally:
        for s in socks:
            s.close()

    runner.run_ok("set-imapsettings", "--banner", "Workers reloaded")

    def every_process_reloaded() -> bool:
        socks, greetings = greet_many(port)
        try:
            counts = accepted_by([main, worker], port)
            return all(b"Workers reloaded" in g for g in greetings) and all(counts.values())
        finally:
            for s in socks:
                s.close()

    until(every_process_reloaded)

    runner.stop(IMAP4)
    until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie")


def test_a_worker_stops_when_the_service_process_is_killed(services: ServiceRunner) -> None:
    runner = services
    runner.run_ok("set-imapsettings", "--worker-processes", "2")
    runner.start(IMAP4)
    status = query_control(runner.home, IMAP4, "MBX01") or {}
    [worker] = status["Extra"]["Workers"]
    os.kill(int(status["Pid"]), signal.SIGKILL)
    until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie")


def test_worker_processes_setting_is_checked(services: ServiceRunner) -> None:
    result = services.mailctl("set-imapsettings", "--worker-processes", "-1")
    assert result.returncode != 0
    assert services.settings.server("MBX01").ImapSettings.WorkerProcesses == 1


# --------------------------------------------------------------------------- back ends

MESSAGE = b"From: a@contoso.test\r\nSubject: hello\r\n\r\nbody text\r\n"
# route() over two processes: bob's sessions go to the service process, alice's to the worker.
IN_MAIN, IN_WORKER = "bob", "alice"


def backend_workers(runner: ServiceRunner, protocol: str) -> None:
    """Two back-end processes; mailboxes that log in with a plaintext password."""
    assert (route(IN_MAIN, 2), route(IN_WORKER, 2)) == (0, 1)
    add_mailboxes(runner.home)
    configure(runner.home, protocol, LoginType=LoginType.PlainTextLogin)
    command = "set-imapsettings" if protocol == "IMAP" else "set-popsettings"
    runner.run_ok(command, "--back-end-worker-processes", "2")
    store = open_store(runner.home, "MBX01")
    try:
        for name in (IN_MAIN, IN_WORKER):
            store.mailbox(name).append_many("INBOX", [NewMessage(MESSAGE)])
    finally:
        store.close()


def shown(runner: ServiceRunner, name: str) -> tuple[int, list[int]]:
    """(service process, its workers) as get-service shows them."""
    rows = json.loads(runner.run_ok("get-service", name, "--output", "json").stdout)
    row = rows[0] if isinstance(rows, list) else rows
    return int(row["Pid"]), [int(pid) for pid in row["Workers"]]


def processes(runner: ServiceRunner, name: str) -> tuple[int, int]:
    """(service process, its one worker) of a back end."""
    main, [worker] = shown(runner, name)
    return main, worker


def holder(pids: tuple[int, ...], client: socket.socket | int) -> int:
    """Which of `pids` holds the far end of the client's TCP connection (after a hand-off,
    the back-end process the front end gave it to)."""
    port = client if isinstance(client, int) else client.getsockname()[1]
    found: list[int] = []

    def held() -> bool:
        found[:] = [
            pid
            for pid in pids
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port
        ]
        return len(found) == 1

    until(held)
    return found[0]


def direct_to(
    runner: ServiceRunner, port: int, mailbox: str, protocol: str, pids: tuple[int, int], pid: int
) -> tuple[socket.socket, list[bytes]]:
    """A connection to the back-end TCP port (as a front end on another host would make)
    that the kernel gave to process `pid`, handed over for `mailbox`. SO_REUSEPORT spreads
    connections by a hash of their addresses: each try lands there with probability 1/2."""
    secret = proxy_secret(runner.home)
    for _ in range(60):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if holder(pids, sock) == pid:
            try:
                return sock, hand_over(sock, secret, mailbox, protocol)
            except HandoverRefused as refused:
                sock.close()
                raise AssertionError(refused.text) from None
        sock.close()
    raise AssertionError(f"no connection reached process {pid}")


def test_backend_workers_take_each_mailbox_in_one_process(services: ServiceRunner) -> None:
    runner = services
    backend_workers(runner, "IMAP")
    runner.start(IMAP4BE)
    runner.start(IMAP4)
    main, worker = processes(runner, IMAP4BE)
    port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port
    clients = []
    try:
        for name, expected in [(IN_MAIN, main), (IN_WORKER, worker), (IN_WORKER, worker)]:
            client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            clients.append(client)
            assert client.login(name, PASSWORD)[0] == "OK"
            assert holder((main, worker), client.socket()) == expected
            assert client.select("INBOX")[1] == [b"1"]
            assert client.fetch("1", "(BODY.PEEK[])")[1][0][1] == MESSAGE
        # get-service counts the sessions of every process.
        assert runner.get(IMAP4BE).Connections == 3
    finally:
        for client in clients:
            client.logout()

    # Each process reloads the settings itself; a worker answers status on its own socket.
    before = (query_control(runner.home, IMAP4BE, "MBX01") or {})["SettingsVersion"]
    runner.run_ok("set-imapsettings", "--max-connections-per-user", "20")

    def versions() -> set[object]:
        return {
            (query_control(runner.home, name, "MBX01") or {}).get("SettingsVersion")
            for name in (IMAP4BE, worker_control_name(IMAP4BE, 1))
        }

    until(lambda: len(versions()) == 1 and before not in versions())

    # A worker that dies is started again; meanwhile its mailboxes go to the service process.
    os.kill(worker, signal.SIGKILL)
    until(lambda: worker not in shown(runner, IMAP4BE)[1])
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as client:
        assert client.login(IN_WORKER, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[1] == [b"1"]
    until(lambda: len(shown(runner, IMAP4BE)[1]) == 1)
    _, restarted = processes(runner, IMAP4BE)
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as client:
        client.login(IN_WORKER, PASSWORD)
        until(lambda: holder((main, restarted), client.socket()) == restarted)

    runner.stop(IMAP4BE)
    until(
        lambda: not psutil.pid_exists(restarted) or psutil.Process(restarted).status() == "zombie"
    )


def test_idle_in_one_process_sees_an_append_through_the_other(services: ServiceRunner) -> None:
    runner = services
    backend_workers(runner, "IMAP")
    runner.start(IMAP4BE)
    runner.start(IMAP4)
    main, worker = processes(runner, IMAP4BE)
    server = runner.settings.server("MBX01")
    with imaplib.IMAP4("127.0.0.1", server.ImapSettings.UnencryptedOrTLSBindings[0].port) as idle:
        idle.login(IN_WORKER, PASSWORD)
        assert holder((main, worker), idle.socket()) == worker
        idle.select("INBOX")
        idle.send(b"i IDLE\r\n")
        assert idle.readline().startswith(b"+ ")

        sock, _ = direct_to(
            runner, server.ImapBackEndPort, IN_WORKER, "IMAP4", (main, worker), main
        )
        with sock:
            assert read_line(sock).startswith(b"* PREAUTH")
            literal = b"From: b@contoso.test\r\nSubject: new\r\n\r\nnew mail\r\n"
            sock.sendall(b"a APPEND INBOX {%d+}\r\n" % len(literal) + literal + b"\r\n")
            while not (line := read_line(sock)).startswith(b"a "):
                pass
            assert line.startswith(b"a OK")

        assert idle.readline() == b"* 2 EXISTS\r\n"
        idle.send(b"DONE\r\n")
        while not (line := idle.readline()).startswith(b"i "):
            pass
        assert line.startswith(b"i OK")


def test_pop3_maildrop_lock_holds_across_backend_processes(services: ServiceRunner) -> None:
    runner = services
    backend_workers(runner, "POP")
    runner.start(POP3BE)
    runner.start(POP3)
    main, worker = processes(runner, POP3BE)
    server = runner.settings.server("MBX01")
    client = poplib.POP3("127.0.0.1", server.PopSettings.UnencryptedOrTLSBindings[0].port)
    try:
        client.user(IN_WORKER)
        client.pass_(PASSWORD)
        assert holder((main, worker), client.sock) == worker
        assert client.stat()[0] == 1
        with pytest.raises(AssertionError, match=r"IN-USE"):
            direct_to(runner, server.PopBackEndPort, IN_WORKER, "POP3", (main, worker), main)
    finally:
        client.quit()
    # Released at QUIT: the other process may take the maildrop now.
    sock, _ = direct_to(runner, server.PopBackEndPort, IN_WORKER, "POP3", (main, worker), main)
    sock.close()


def test_a_move_ends_the_sessions_in_every_backend_process(services: ServiceRunner) -> None:
    """A mailbox move's end-sessions request reaches the service process only; it passes it
    on to its workers, and the answer counts the sessions ended there too."""
    runner = services
    backend_workers(runner, "IMAP")
    runner.start(IMAP4BE)
    runner.start(IMAP4)
    port = runner.settings.server("MBX01").ImapSettings.UnencryptedOrTLSBindings[0].port
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        client.login(IN_WORKER, PASSWORD)
        client.select("INBOX")
        request = {"op": "end-sessions", "mailbox": IN_WORKER, "text": "[UNAVAILABLE] moved"}
        answer = control_request(runner.home, IMAP4BE, "MBX01", request, 60.0)
        assert answer == {"ended": 1}
        assert client.readline() == b"* BYE [UNAVAILABLE] moved\r\n"
        assert client.readline() == b""  # and the connection is closed
    finally:
        client.shutdown()
