"""Front ends handing logged-in plaintext clients to the back end of their own host
(server/frontend/handoff.py, server/backend/handoff.py): the real services in-process,
real clients on real sockets."""

from __future__ import annotations

import imaplib
import poplib
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE
from server.settings.paths import Home
from server.settings.types import LoginType
from server.store import NewMessage, open_store
from tests.e2e.frontend_support import (
    PASSWORD,
    Deflated,
    add_mailboxes,
    client_context,
    configure,
    make_home,
    ports,
)

MESSAGE = b"From: a@contoso.test\r\nSubject: hello\r\n\r\nbody text\r\n"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    configure(home, "IMAP", LoginType=LoginType.PlainTextLogin)
    configure(home, "POP", LoginType=LoginType.PlainTextLogin)
    store = open_store(home, "MBX01")
    try:
        store.mailbox("bob").append_many("INBOX", [NewMessage(MESSAGE)])
    finally:
        store.close()
    return home


@pytest.fixture
def imap(home: Home, in_process: Any) -> Iterator[tuple[Any, Any]]:
    with in_process(IMAP4BE, home) as backend, in_process(IMAP4, home) as front:
        yield front, backend


@pytest.fixture
def pop(home: Home, in_process: Any) -> Iterator[tuple[Any, Any]]:
    with in_process(POP3BE, home) as backend, in_process(POP3, home) as front:
        yield front, backend


def wait_until(front: Any, predicate: Any) -> None:
    """Poll the service's own state on its loop (the END record arrives asynchronously)."""
    import time

    for _ in range(500):
        if front.call(_check(predicate)):
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


async def _check(predicate: Any) -> bool:
    return bool(predicate())


def test_plaintext_imap_session_is_handed_off_and_counted_until_it_ends(imap: Any) -> None:
    front, _ = imap
    home = front.home
    plain, _ = ports(home, "IMAP")
    client = imaplib.IMAP4("127.0.0.1", plain)
    typ, data = client.login("bob", PASSWORD)
    assert typ == "OK" and b"COMPRESS=DEFLATE" in data[0]
    service = front.service
    assert service.handoff is not None and service.handoff._processes[0].channel is not None
    # The front end holds no socket of the session any more, but still counts it.
    wait_until(front, lambda: not service._sessions)
    assert service.limits.of_user("bob") == 1
    assert client.select("INBOX")[1] == [b"1"]
    typ, fetched = client.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and fetched[0][1] == MESSAGE
    client.logout()
    wait_until(front, lambda: service.limits.of_user("bob") == 0 and service.limits.total == 0)


def test_commands_pipelined_behind_login_reach_the_back_end_in_order(imap: Any) -> None:
    front, _ = imap
    plain, _ = ports(front.home, "IMAP")
    with socket.create_connection(("127.0.0.1", plain)) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(
            f"a LOGIN bob {PASSWORD}\r\nb SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\nd LOGOUT\r\n".encode()
        )
        lines = []
        while not (lines and lines[-1].startswith(b"d OK")):
            line = reader.readline()
            assert line, lines
            lines.append(line)
    tags = [line.split(b" ", 1)[0] for line in lines if not line.startswith(b"*")]
    assert tags == [b"a", b"b", b"c", b"d"]


def compress_then_fetch(sock: socket.socket) -> None:
    """LOGIN, COMPRESS DEFLATE, then a FETCH both ways compressed (RFC 4978)."""
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    sock.sendall(f"a LOGIN bob {PASSWORD}\r\n".encode())
    assert b"COMPRESS=DEFLATE" in reader.readline()
    deflated = Deflated(sock, reader)
    deflated.send(b"c SELECT INBOX\r\nd FETCH 1 BODY.PEEK[]\r\n")
    out = deflated.read_until(b"d OK")
    assert MESSAGE in out


def test_compress_on_a_handed_off_session(imap: Any) -> None:
    front, _ = imap
    plain, _ = ports(front.home, "IMAP")
    with socket.create_connection(("127.0.0.1", plain)) as sock:
        compress_then_fetch(sock)


def test_tls_clients_are_relayed_over_a_socket_pair(imap: Any) -> None:
    """A TLS session cannot leave the front end; the back end gets one end of a socket
    pair (no TCP connection, no TLS hop), and COMPRESS stays the front end's."""
    front, _ = imap
    _, secure = ports(front.home, "IMAP")
    with imaplib.IMAP4_SSL("127.0.0.1", secure, ssl_context=client_context(front.home)) as c:
        assert c.login("bob", PASSWORD)[0] == "OK"
        (session,) = front.service._sessions  # still the front end's: relayed
        hop = session._backend_writer.get_extra_info("socket")
        assert hop.family == socket.AF_UNIX
        assert c.select("INBOX")[1] == [b"1"]
    context = client_context(front.home)
    with socket.create_connection(("127.0.0.1", secure)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            compress_then_fetch(sock)


def test_per_user_limit_holds_across_handed_off_sessions(home: Home, imap: Any) -> None:
    front, _ = imap
    configure(home, "IMAP", MaxConnectionsPerUser=1)
    front.reload()
    plain, _ = ports(home, "IMAP")
    first = imaplib.IMAP4("127.0.0.1", plain)
    first.login("bob", PASSWORD)
    second = imaplib.IMAP4("127.0.0.1", plain)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
        second.login("bob", PASSWORD)
    first.logout()
    wait_until(front, lambda: front.service.limits.of_user("bob") == 0)
    assert second.login("bob", PASSWORD)[0] == "OK"
    second.logout()


def test_pop3_handed_off_and_the_maildrop_released_after_quit(pop: Any) -> None:
    front, _ = pop
    plain, _ = ports(front.home, "POP")
    for _ in range(2):  # the second login finds the maildrop free again
        client = poplib.POP3("127.0.0.1", plain)
        client.user("bob")
        client.pass_(PASSWORD)
        wait_until(front, lambda: not front.service._sessions)
        assert client.stat()[0] == 1
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == MESSAGE
        client.quit()
        wait_until(front, lambda: front.service.limits.total == 0)


def test_handoff_off_relays_everything(
    home: Home, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCTL_HANDOFF", "off")
    with in_process(IMAP4BE, home), in_process(IMAP4, home) as front:
        plain, _ = ports(home, "IMAP")
        client = imaplib.IMAP4("127.0.0.1", plain)
        client.login("bob", PASSWORD)
        assert front.service.handoff is None and len(front.service._sessions) == 1
        client.logout()


def test_a_lost_channel_releases_the_counts_of_its_sessions(imap: Any) -> None:
    """The back end stopped (its sessions end with it): nothing will say END, so the
    front end must not keep counting those sessions against the limits."""
    front, _ = imap
    service = front.service
    plain, _ = ports(front.home, "IMAP")
    client = imaplib.IMAP4("127.0.0.1", plain)
    client.login("bob", PASSWORD)
    wait_until(front, lambda: not service._sessions)
    assert service.limits.of_user("bob") == 1

    async def lose_channel() -> None:
        service.handoff._processes[0].channel.records.close()

    front.call(lose_channel())
    assert service.limits.of_user("bob") == 0 and service.limits.total == 0
    client.shutdown()


@pytest.mark.parametrize("tls", [False, True])
def test_compress_carries_big_answers_intact(home: Home, imap: Any, tls: bool) -> None:
    """Many large literals in one answer, compressed by the back end of a handed-off
    plaintext session (by the front end of a TLS one): every byte inflates back, in order."""
    import random

    rng = random.Random(7)
    bodies = [
        b"Subject: big %d\r\n\r\n" % n
        + b"\r\n".join(
            bytes(rng.choice(b"abcdefghij klmnop") for _ in range(70)) for _ in range(600)
        )
        + b"\r\n"
        for n in range(12)
    ]
    store = open_store(home, "MBX01")
    try:
        store.mailbox("bob").append_many("INBOX", [NewMessage(b) for b in bodies])
    finally:
        store.close()
    front, _ = imap
    plain, secure = ports(front.home, "IMAP")
    raw = socket.create_connection(("127.0.0.1", secure if tls else plain))
    if tls:
        raw = client_context(front.home).wrap_socket(raw, server_hostname="127.0.0.1")
    with raw as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"a LOGIN bob {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        reader.readline()
        assert reader.readline() == b"b OK DEFLATE active\r\n"
        deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        inflate = zlib.decompressobj(-15)
        sock.sendall(
            deflate.compress(b"c SELECT INBOX\r\nd FETCH 1:* BODY.PEEK[]\r\n")
            + deflate.flush(zlib.Z_SYNC_FLUSH)
        )
        out = b""
        while b"d OK" not in out:
            chunk = reader.read1(65536)
            assert chunk
            out += inflate.decompress(chunk)
    for body in bodies:
        assert body in out


@pytest.mark.parametrize("tls", [False, True])
def test_compressed_appends_with_synchronizing_literals(imap: Any, tls: bool) -> None:
    """APPEND with a synchronizing literal after COMPRESS (the "+" go-ahead comes from the
    back end, compressed), then FETCH of what was appended, in one compressed stream."""
    front, _ = imap
    plain, secure = ports(front.home, "IMAP")
    raw = socket.create_connection(("127.0.0.1", secure if tls else plain))
    if tls:
        raw = client_context(front.home).wrap_socket(raw, server_hostname="127.0.0.1")
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)

    def send(data: bytes) -> None:
        raw.sendall(deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH))

    received = b""

    def until(marker: bytes) -> None:
        nonlocal received
        while marker not in received:
            chunk = raw.recv(65536)
            assert chunk, received
            received += inflate.decompress(chunk)

    with raw:
        reader = raw.makefile("rb", buffering=0)
        assert reader.readline().startswith(b"* OK")
        raw.sendall(f"a LOGIN bob {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        assert reader.readline().startswith(b"a OK")
        assert reader.readline() == b"b OK DEFLATE active\r\n"
        bodies = [b"Subject: n%d\r\n\r\n" % n + b"x" * (3000 + n) + b"\r\n" for n in range(5)]
        for n, body in enumerate(bodies):
            send(b"c%d APPEND INBOX {%d}\r\n" % (n, len(body)))
            until(b"+ ")
            received = b""
            send(body + b"\r\n")
            until(b"c%d OK" % n)
            received = b""
        send(b"d SELECT INBOX\r\ne FETCH 2:* BODY.PEEK[]\r\n")
        until(b"e OK")
    for body in bodies:
        assert body in received


class _Compressed:
    """A raw client after COMPRESS DEFLATE: deflate what it sends (sync-flushed), inflate
    what it receives, line by line."""

    def __init__(self, sock: socket.socket, received: bytes = b"") -> None:
        self.sock = sock
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.buffer = self.inflate.decompress(received)

    def pack(self, data: bytes) -> bytes:
        return self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.pack(data))

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, self.buffer
            self.buffer += self.inflate.decompress(chunk)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def until(self, prefix: bytes) -> list[bytes]:
        lines = [self.line()]
        while not lines[-1].startswith(prefix):
            lines.append(self.line())
        return lines


def _read_clear_line(sock: socket.socket, buffered: bytearray) -> bytes:
    """One line in the clear, by recv (a makefile() would read compressed bytes ahead)."""
    while b"\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, buffered
        buffered += chunk
    line, _, rest = bytes(buffered).partition(b"\r\n")
    buffered[:] = rest
    return line


@pytest.mark.parametrize("behind_login", [False, True])
def test_commands_pipelined_right_behind_compress_are_inflated(
    imap: Any, behind_login: bool
) -> None:
    """RFC 4978: what the client sends after COMPRESS's CRLF is compressed, even when it
    comes in the same packet (read already with the COMPRESS command by the back end, or
    by the front end with the LOGIN and handed over with the socket)."""
    front, _ = imap
    plain, _ = ports(front.home, "IMAP")
    with socket.create_connection(("127.0.0.1", plain), timeout=10) as sock:
        buffered = bytearray()
        assert _read_clear_line(sock, buffered).startswith(b"* OK")
        client = _Compressed(sock)
        login = f"a LOGIN bob {PASSWORD}\r\n".encode()
        pipelined = client.pack(b"c SELECT INBOX\r\nd FETCH 1 BODY.PEEK[]\r\ne CAPABILITY\r\n")
        if behind_login:
            sock.sendall(login + b"b COMPRESS DEFLATE\r\n" + pipelined)
        else:
            sock.sendall(login)
            assert _read_clear_line(sock, buffered).startswith(b"a OK")
            sock.sendall(b"b COMPRESS DEFLATE\r\n" + pipelined)
        if behind_login:
            assert _read_clear_line(sock, buffered).startswith(b"a OK")
        assert _read_clear_line(sock, buffered) == b"b OK DEFLATE active"
        client.buffer = client.inflate.decompress(bytes(buffered))
        lines = client.until(b"e OK")
        text = b"\r\n".join(lines)
        assert b"c OK [READ-WRITE]" in text and MESSAGE.rstrip(b"\r\n") in text
        (caps,) = [line for line in lines if line.startswith(b"* CAPABILITY ")]
        assert caps.split().count(b"COMPRESS=DEFLATE") == 1
        client.send(b"f LOGOUT\r\n")
        assert client.until(b"f OK")[0].startswith(b"* BYE")


def test_idle_pushes_after_compress_are_compressed(imap: Any) -> None:
    """The IDLE updates a delivery brings are written by the back end outside any
    command (server/backend/imap/server.py): after COMPRESS they too are deflated."""
    front, _ = imap
    plain, _ = ports(front.home, "IMAP")
    with socket.create_connection(("127.0.0.1", plain), timeout=10) as sock:
        buffered = bytearray()
        assert _read_clear_line(sock, buffered).startswith(b"* OK")
        sock.sendall(f"a LOGIN bob {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        assert _read_clear_line(sock, buffered).startswith(b"a OK")
        assert _read_clear_line(sock, buffered) == b"b OK DEFLATE active"
        assert not buffered
        client = _Compressed(sock)
        client.send(b"c SELECT INBOX\r\nd IDLE\r\n")
        assert b"* 1 EXISTS" in client.until(b"c OK")
        assert client.line() == b"+ idling"
        other = imaplib.IMAP4("127.0.0.1", plain)
        other.login("bob", PASSWORD)
        assert other.append("INBOX", None, None, b"Subject: new\r\n\r\nnew mail\r\n")[0] == "OK"
        other.logout()
        assert b"* 2 EXISTS" in client.until(b"* 2 EXISTS")
        client.send(b"DONE\r\n")
        assert client.until(b"d ")[-1] == b"d OK IDLE terminated"
        client.send(b"e LOGOUT\r\n")
        assert client.until(b"e OK")[0] == b"* BYE Logging out"
