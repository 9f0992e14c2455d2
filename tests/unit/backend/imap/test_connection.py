"""The IMAP back end's connection answering in the data callback (server/backend/imap/
server.py _Connection with a SessionProtocol, server/backend/imap/connection.py): a
scripted session over a real socket pair, so what is tested is the I/O layer alone."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from server.backend.imap import server as imap_server
from server.backend.imap.connection import ConnectionLock, session_streams
from server.backend.imap.session import Job


class ScriptedSession:
    """Each CRLF line "tag kind [size]" is one command; `kind` says how its job runs:
    inline (read-only, on the loop), thread (a worker thread), quick (non-blocking),
    logout (closes the session)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.compression = None
        self.mailbox = None
        self.idling = False
        self.login = None
        self.notify = None
        self.idle_pending = False
        self.authenticated = True
        self.reader = SimpleNamespace(buffered=0)
        self.ran: list[tuple[str, str]] = []  # (tag, thread name) in the order jobs ran
        self.gate: threading.Event | None = None  # a thread job waits for it

    def receive(self, data: bytes) -> None:
        self.buffer += data

    def next_job(self) -> Job | None:
        if self.closed or b"\r\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        tag, kind, *rest = line.decode().split()
        size = int(rest[0]) if rest else 0

        def run() -> bytes:
            if kind == "thread" and self.gate is not None:
                self.gate.wait(5)
            self.ran.append((tag, threading.current_thread().name))
            if kind == "logout":
                self.closed = True
                return f"* BYE\r\n{tag} OK\r\n".encode()
            return b"x" * size + f"{tag} OK\r\n".encode()

        if kind == "quick" or kind == "logout":
            return Job(False, run, kind.upper(), tag)
        return Job(True, run, kind.upper(), tag, inline=kind == "inline")

    def release(self) -> None:
        pass

    def bye(self, text: str) -> bytes:
        self.closed = True
        return f"* BYE {text}\r\n".encode()

    def keepalive(self) -> bytes:
        return b"* OK Still here\r\n"


class FakeService:
    def __init__(self) -> None:
        self.protocol_log = SimpleNamespace(enabled=False)
        self.session_ids = itertools.count(1)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="worker")
        self.spawned: list[Any] = []

    def imap_settings(self) -> Any:
        return SimpleNamespace(
            AuthenticatedConnectionTimeout=timedelta(minutes=30),
            PreAuthenticatedConnectionTimeout=timedelta(minutes=1),
        )

    def inline_allowed(self) -> bool:
        return True

    def ran_inline(self, seconds: float, cpu: float, disk: bool) -> None:
        pass

    def spawn(self, coro: Any) -> None:
        self.spawned.append(asyncio.ensure_future(coro))


async def served(
    body: Callable[[socket.socket, Any, ScriptedSession], Any], session: ScriptedSession
) -> None:
    service = FakeService()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    try:
        reader, writer, protocol = await session_streams(ours, b"")
        connection = imap_server._Connection(  # noqa: SLF001 - the unit under test
            service,  # type: ignore[arg-type]
            reader,
            writer,
            None,
            session,  # type: ignore[arg-type]
            protocol,
        )
        running = asyncio.ensure_future(connection.run(b""))
        await body(theirs, connection, session)
        theirs.close()
        await asyncio.wait_for(running, 5)
        writer.close()
    finally:
        theirs.close()
        service.executor.shutdown()


async def read_until(sock: socket.socket, end: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while not got.endswith(end):
        data = await loop.sock_recv(sock, 65536)
        assert data, f"closed before {end!r}: {got[-200:]!r}"
        got += data
    return got


def test_acquire_now_takes_only_a_free_lock_nobody_waits_for() -> None:
    async def main() -> None:
        lock = ConnectionLock()
        assert lock.acquire_now() and lock.locked()
        assert not lock.acquire_now()
        waiter = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)  # the waiter queues
        lock.release()  # free, but promised to the waiter
        assert not lock.acquire_now()
        await waiter
        assert lock.locked()
        lock.release()
        assert lock.acquire_now()

    asyncio.run(main())


def test_a_read_only_command_is_answered_in_the_callback_with_no_task() -> None:
    async def body(client: socket.socket, connection: Any, session: ScriptedSession) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"a inline 10\r\nb quick\r\n")
        assert await read_until(client, b"b OK\r\n") == b"x" * 10 + b"a OK\r\nb OK\r\n"
        assert connection.busy is None and not connection.lock.locked()
        here = threading.current_thread().name
        assert session.ran == [("a", here), ("b", here)]

    asyncio.run(served(body, ScriptedSession()))


def test_pipelined_commands_behind_a_thread_job_wait_for_it_in_order() -> None:
    session = ScriptedSession()
    gate = session.gate = threading.Event()

    async def body(client: socket.socket, connection: Any, session: ScriptedSession) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"a inline\r\nb thread\r\nc inline\r\n")
        got = await read_until(client, b"a OK\r\n")
        assert connection.busy is not None and connection.paused  # b runs: reading paused
        await loop.sock_sendall(client, b"d quick\r\n")
        gate.set()
        got = await read_until(client, b"d OK\r\n")
        assert got == b"b OK\r\nc OK\r\nd OK\r\n"
        assert [tag for tag, _ in session.ran] == ["a", "b", "c", "d"]
        assert session.ran[1][1].startswith("worker")
        assert not connection.paused

    asyncio.run(served(body, session))


def test_a_client_that_does_not_read_pauses_reading_until_it_does() -> None:
    big = imap_server.WRITE_HIGH_WATER * 4

    async def body(client: socket.socket, connection: Any, session: ScriptedSession) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, f"a inline {big}\r\nb inline\r\n".encode())
        for _ in range(100):  # until the callback has handed over and the pump waits
            if connection.waiting:
                break
            await asyncio.sleep(0)
        assert connection.paused and connection.waiting
        assert [tag for tag, _ in session.ran] == ["a"]  # b waits for the client
        got = await read_until(client, b"b OK\r\n")
        assert got.endswith(b"a OK\r\nb OK\r\n") and len(got) == big + 12
        assert not connection.paused

    asyncio.run(served(body, ScriptedSession()))


@pytest.mark.parametrize("pipelined", [b"", b"b inline\r\n"])
def test_logout_closes_after_its_answer_whatever_follows(pipelined: bytes) -> None:
    async def body(client: socket.socket, connection: Any, session: ScriptedSession) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"a logout\r\n" + pipelined)
        got = b""
        while data := await loop.sock_recv(client, 65536):
            got += data
        assert got == b"* BYE\r\na OK\r\n"
        assert [tag for tag, _ in session.ran] == ["a"]

    asyncio.run(served(body, ScriptedSession()))


# --- the handed-in socket's streams ----------------------------------------------------


def test_streams_give_read_ahead_then_the_socket_then_what_comes_later() -> None:
    async def scenario() -> bytes:
        mine, theirs = socket.socketpair()
        theirs.sendall(b"2 second\r\n")
        reader, writer, _ = await session_streams(mine, b"1 first\r\n")
        theirs.sendall(b"3 third\r\n")
        theirs.shutdown(socket.SHUT_WR)
        data = await reader.read()
        writer.close()
        theirs.close()
        return data

    assert asyncio.run(scenario()) == b"1 first\r\n2 second\r\n3 third\r\n"


def test_a_peer_gone_before_the_streams_is_an_eof() -> None:
    async def scenario() -> bytes:
        mine, theirs = socket.socketpair()
        theirs.sendall(b"last words\r\n")
        theirs.close()
        reader, writer, _ = await session_streams(mine, b"")
        data = await reader.read()
        writer.close()
        return data

    assert asyncio.run(scenario()) == b"last words\r\n"
