"""Back-pressure: a client that pipelines big retrievals and reads nothing must not make the
back end (or the front end's relay) queue every answer in memory. The services run in this
process, so the process's RSS is what they hold; a 5 MB message fetched 200 times would be
1 GB queued without back-pressure."""

from __future__ import annotations

import gc
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest

from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE
from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, client_context, make_home, ports
from tests.e2e.test_imap_backend import Backend as ImapBackend
from tests.e2e.test_imap_backend import backend as imap_backend  # noqa: F401 - fixture
from tests.e2e.test_pop3_backend import Backend as PopBackend
from tests.e2e.test_pop3_backend import backend as pop_backend  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

COUNT = 200
LIMIT = 100 * 1024 * 1024  # RSS growth allowed while COUNT answers of 5 MB are pending


def big_message() -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    body = line * (5 * 1024 * 1024 // len(line))
    return (
        b"From: alice@contoso.test\r\nTo: bob@contoso.test\r\nSubject: big\r\n"
        b"Message-ID: <big@contoso.test>\r\n\r\n" + body
    )


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


STILL = 0.5  # seconds a blocked writer's buffer must stay the same size


def wait_blocked(service: Any, base: int, timeout: float = 60.0) -> int:
    """Waits until the back end has sat in drain() with an unchanged write buffer for
    STILL seconds (back-pressure all the way to the client), or until the process has
    grown past LIMIT (none: everything is queued somewhere); returns the growth then."""
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] | None = None
    since = time.monotonic()
    while True:
        grown = rss() - base
        if grown > LIMIT:
            return grown
        state = blocked_writers(service)
        now = time.monotonic()
        if state != last:
            last, since = state, now
        elif state and now - since >= STILL:
            return grown
        if now > deadline:
            raise AssertionError(f"neither blocked nor grown ({grown} bytes)")
        time.sleep(0.02)


def blocked_writers(service: Any) -> tuple[int, ...]:
    """Write-buffer sizes of the back end's connections waiting for their client."""
    if hasattr(service, "waiting_for_clients"):  # POP3: connections map to writers
        if not service.waiting_for_clients:
            return ()
        writers = list(service._connections.values())
    else:
        writers = [
            c.writer
            for c in list(service._connections.values())
            if c is not None and getattr(c, "waiting", False)
        ]
    return tuple(w.transport.get_write_buffer_size() for w in writers if w is not None)


def read_until(sock: socket.socket, marker: bytes, watch: list[int], base: int) -> bytes:
    """Reads until `marker` shows up, keeping the largest RSS growth seen in watch[0]. Only
    the last bytes are kept: the test holds no copy of what it reads."""
    tail = b""
    count = 0
    while marker not in tail:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed early")
        tail = (tail + data)[-4096:]
        count += 1
        if count % 64 == 0:
            watch[0] = max(watch[0], psutil.Process().memory_info().rss - base)
    return tail


def test_imap_backend_pipelined_fetch_without_reading_stays_bounded(
    imap_backend: ImapBackend,  # noqa: F811
) -> None:
    imap_backend.inbox().append("INBOX", big_message())
    r = imap_backend.raw()
    assert " OK " in r.cmd("s SELECT INBOX")
    base = rss()
    r.sock.sendall(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % n for n in range(COUNT)))
    grown = wait_blocked(imap_backend.service, base)
    try:
        assert grown < LIMIT, f"the back end grew {grown >> 20} MB for a client that reads nothing"
        # Reading on, the client gets every answer while the back end stays bounded.
        watch = [grown]
        read_until(r.sock, b"f%d OK" % (COUNT - 1), watch, base)
        assert watch[0] < LIMIT, f"grew {watch[0] >> 20} MB while the client read"
    finally:
        r.close()


def test_pop3_backend_pipelined_retr_without_reading_stays_bounded(
    pop_backend: PopBackend,  # noqa: F811
) -> None:
    pop_backend.deliver(big_message())
    pop = pop_backend.login()
    sock = pop.sock
    base = rss()
    sock.sendall(b"RETR 1\r\n" * COUNT + b"NOOP\r\n")
    service = pop_backend.service
    grown = wait_blocked(service, base)
    try:
        assert grown < LIMIT, f"the back end grew {grown >> 20} MB for a client that reads nothing"
    finally:
        sock.close()


@pytest.fixture
def site(tmp_path: Path, in_process: Any) -> Iterator[tuple[Home, dict[str, Any]]]:
    """Front ends and back ends of MBX01, all in this process."""
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    with ExitStack() as stack:
        running = {
            name: stack.enter_context(in_process(name, home, "MBX01"))
            for name in (IMAP4BE, POP3BE, IMAP4, POP3)
        }
        yield home, running


def tls_connect(home: Home, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return client_context(home).wrap_socket(raw, server_hostname="mbx01.contoso.test")


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def test_front_end_relay_stops_reading_the_back_end_for_a_client_that_reads_nothing(
    site: tuple[Home, dict[str, Any]],
) -> None:
    home, running = site
    mail = open_store(home, "MBX01")
    try:
        mail.mailbox("bob").append("INBOX", big_message())
    finally:
        mail.close()
    _, imaps = ports(home, "IMAP")
    sock = tls_connect(home, imaps)
    buf = bytearray()
    try:
        assert read_line(sock, buf).startswith(b"* OK")
        sock.sendall(b"a LOGIN bob " + PASSWORD.encode() + b"\r\nb SELECT INBOX\r\n")
        while not read_line(sock, buf).startswith(b"b OK"):
            pass
        base = rss()
        sock.sendall(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % n for n in range(COUNT)))
        # The chain stops at the back end only if the relay stopped reading from it.
        grown = wait_blocked(running[IMAP4BE].service, base)
        assert grown < LIMIT, f"the services grew {grown >> 20} MB for a client that reads nothing"
    finally:
        sock.close()


def test_imap_backend_streams_a_big_message_from_its_file(
    imap_backend: ImapBackend,  # noqa: F811
) -> None:
    """A big literal is sent from the message file in pieces, with back-pressure between
    them: a client that reads nothing of a 40 MB message costs the back end a few MB, not
    the message (read whole, it would sit in the transport's buffer)."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    huge = b"Subject: huge\r\n\r\n" + line * (40 * 1024 * 1024 // len(line))
    imap_backend.inbox().append("INBOX", huge)
    r = imap_backend.raw()
    assert " OK " in r.cmd("s SELECT INBOX")
    base = rss()
    r.sock.sendall(b"f FETCH 1 BODY.PEEK[]\r\n")
    grown = wait_blocked(imap_backend.service, base)
    try:
        assert grown < 16 * 1024 * 1024, f"grew {grown >> 20} MB for one unread 40 MB message"
    finally:
        r.close()


def test_streamed_literals_arrive_whole_with_the_other_items(
    imap_backend: ImapBackend,  # noqa: F811
) -> None:
    big = big_message()
    other = big.replace(b"Subject: big", b"Subject: two")
    box = imap_backend.inbox()
    box.append("INBOX", big)
    box.append("INBOX", other)
    m = imap_backend.imaplib()
    m.select("INBOX")
    typ, data = m.fetch("1:2", "(UID BODY[] RFC822.SIZE)")  # \Seen: FLAGS comes after
    assert typ == "OK"
    bodies = [entry for entry in data if isinstance(entry, tuple)]
    assert [b[1] for b in bodies] == [big, other]
    tails = [entry for entry in data if isinstance(entry, bytes)]
    assert all(b[0].startswith(b"%d (UID %d BODY[] {" % (n, n)) for n, b in enumerate(bodies, 1))
    assert all(
        t.startswith(b" RFC822.SIZE 5242956 FLAGS (\\Seen") and t.endswith(b")") for t in tails
    ), tails
    typ, data = m.fetch("2", "(BODY.PEEK[] RFC822)")  # the same file twice in one response
    assert [entry[1] for entry in data if isinstance(entry, tuple)] == [other, other]
    m.logout()


def test_pop3_backend_streams_a_big_retr_from_its_file(
    pop_backend: PopBackend,  # noqa: F811
) -> None:
    """RETR of a big stored message that needs no byte-stuffing goes out from its file a
    slice at a time: an unread 40 MB RETR costs the back end a few MB."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    pop_backend.deliver(b"Subject: huge\r\n\r\n" + line * (40 * 1024 * 1024 // len(line)))
    pop = pop_backend.login()
    base = rss()
    pop.sock.sendall(b"RETR 1\r\n")
    grown = wait_blocked(pop_backend.service, base)
    try:
        assert grown < 16 * 1024 * 1024, f"grew {grown >> 20} MB for one unread 40 MB RETR"
    finally:
        pop.sock.close()


def test_pop3_big_messages_arrive_whole_streamed_or_stuffed(
    pop_backend: PopBackend,  # noqa: F811
) -> None:
    plain = big_message()
    dotted = plain.replace(b"\r\n0123", b"\r\n.0123", 3)  # needs byte-stuffing: not streamed
    asks = plain.replace(
        b"Subject: big", b"Disposition-Notification-To: a@contoso.test\r\nSubject: big"
    )
    pop_backend.deliver(plain, dotted, asks)
    pop = pop_backend.login()
    for n, want in enumerate((plain, dotted, asks, plain), 1):  # the 4th: facts cached
        assert pop.body(n if n < 4 else 1) == want
    pop.quit()
