"""Stop-Service of a front end (SIGTERM): every client, logged in (relayed to the back end)
or not, gets the protocol's goodbye (IMAP `* BYE`, POP3 `-ERR`) and the process exits at
once instead of waiting out the grace period."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import psutil
import pytest

from server.runtime import tls
from server.settings.models import IMAP4, POP3

from .conftest import REPO, ServiceRunner, free_base_port

pytestmark = pytest.mark.e2e

PASSWORD = "Alice-pass-1"


def connect(runner: ServiceRunner, port: int) -> ssl.SSLSocket:
    context = tls.client_context(runner.home, verify=False)
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    sock.settimeout(10)
    return sock


def read_until(sock: ssl.SSLSocket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: ssl.SSLSocket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    return data


@pytest.mark.parametrize(
    ("service", "offset", "login", "goodbye"),
    [
        (IMAP4, 993, [(b"a LOGIN alice " + PASSWORD.encode(), b"a OK")], b"* BYE "),
        (POP3, 995, [(b"USER alice", b"+OK"), (b"PASS " + PASSWORD.encode(), b"+OK")], b"-ERR "),
    ],
)
def test_stop_says_goodbye_to_every_client_and_exits_at_once(
    fresh_home: ServiceRunner,
    service: str,
    offset: int,
    login: list[tuple[bytes, bytes]],
    goodbye: bytes,
) -> None:
    runner = fresh_home
    base = free_base_port()
    runner.run_ok("init", "--base-port", str(base), "--no-demo")
    created = subprocess.run(
        [sys.executable, "-m", "mailctl", "new-mailbox", "alice", "--password-stdin"],
        input=PASSWORD + "\n",
        env=runner.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    runner.run_ok("enable-imap4" if service == IMAP4 else "enable-pop3")

    relayed = connect(runner, base + offset)
    read_until(relayed, b"\r\n")  # greeting
    for line, expected in login:
        relayed.sendall(line + b"\r\n")
        answer = read_until(relayed, b"\r\n")
        while service == IMAP4 and answer.startswith(b"*"):  # untagged lines first
            answer = answer.split(b"\r\n", 1)[1] or read_until(relayed, b"\r\n")
        assert answer.startswith(expected), answer
    waiting = connect(runner, base + offset)  # not logged in
    read_until(waiting, b"\r\n")

    info = json.loads(runner.run_ok("get-service", service, "--output", "json").stdout)[0]
    process = psutil.Process(info["Pid"])
    started = time.monotonic()
    os.kill(info["Pid"], signal.SIGTERM)
    # Exited means gone or a zombie: a detached service is reaped by whoever adopted it.
    while time.monotonic() - started < 30:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    took = time.monotonic() - started
    assert took < 1.5, f"{service} took {took:.2f} s to stop"

    for sock in (relayed, waiting):
        tail = read_to_eof(sock)
        assert tail.startswith(goodbye) and tail.endswith(b"\r\n"), tail
        assert tail.count(b"\r\n") == 1, tail
        sock.close()
