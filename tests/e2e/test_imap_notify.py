"""NOTIFY (RFC 5465) end to end: a client that asked for NOTIFY hears of another client's
APPEND without IDLE or any command, through the front end and the real back end."""

from __future__ import annotations

import imaplib
import socket

from tests.e2e.frontend_support import PASSWORD
from tests.e2e.test_imap_wrong_message import FIRST, port  # noqa: F401 - the fixture


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Reads until `marker` arrives (the socket's timeout bounds the wait)."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_status_of_a_watched_mailbox_arrives_unasked(port: int) -> None:  # noqa: F811
    other = imaplib.IMAP4("127.0.0.1", port)
    other.login("alice", PASSWORD)
    other.create("watched")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _read_until(sock, b"\r\n")
        sock.sendall(b'a LOGIN alice "%s"\r\n' % PASSWORD.encode())
        assert b" NOTIFY" in _read_until(sock, b"a OK")
        sock.sendall(b"n NOTIFY SET STATUS (mailboxes watched (MessageNew MessageExpunge))\r\n")
        got = _read_until(sock, b"n OK")
        assert b'* STATUS "watched" (MESSAGES 0 ' in got
        other.append("watched", None, None, FIRST)
        assert b'* STATUS "watched" (MESSAGES 1 UIDNEXT 2 ' in _read_until(sock, b"UIDNEXT 2")
        sock.sendall(b"z LOGOUT\r\n")
        _read_until(sock, b"z OK")
    other.logout()
