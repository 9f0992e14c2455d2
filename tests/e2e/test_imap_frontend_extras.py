"""The real IMAP pair through the front end: AUTHENTICATE LOGIN with imaplib, COMPRESS,
ENABLE IMAP4rev2, and huge literals before and after login."""

from __future__ import annotations

import base64
import imaplib
import socket
import zlib

import pytest

from tests.e2e.conftest import ServiceRunner
from tests.e2e.frontend_support import Deflated

pytestmark = pytest.mark.e2e

USER, PASSWORD = "loginuser", "Login-pass-1"


@pytest.fixture
def imap_port(services: ServiceRunner) -> int:
    services.new_mailbox(USER, PASSWORD)
    return services.start_imap_plain()


def test_authenticate_login_with_imaplib(imap_port: int) -> None:
    answers = iter([USER.encode(), PASSWORD.encode()])
    prompts: list[bytes] = []

    def reply(challenge: bytes) -> bytes:
        prompts.append(challenge)
        return next(answers)

    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=10) as client:
        assert "AUTH=LOGIN" in client.capabilities
        typ, _ = client.authenticate("LOGIN", reply)
        assert typ == "OK" and prompts == [b"Username:", b"Password:"]
        assert client.select("INBOX")[0] == "OK"
        client.logout()


def _exchange(port: int, *lines: bytes) -> bytes:
    """Send each line, read until the server is quiet or closes; everything it said."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(2)
        data = sock.recv(4096)
        for line in lines:
            try:
                sock.sendall(line)
            except OSError:
                break
            try:
                while chunk := sock.recv(65536):
                    data += chunk
                    if chunk.endswith(b"\r\n") and (
                        b" OK " in chunk or b" NO " in chunk or b" BAD " in chunk or b"BYE" in chunk
                    ):
                        break
                if not chunk:
                    break
            except TimeoutError:
                break
    return data


def test_huge_literal_plus_is_refused_at_once_before_and_after_login(imap_port: int) -> None:
    out = _exchange(imap_port, b"a LOGIN {4294967296+}\r\n", b"x" * 1000)
    assert b"a BAD [TOOBIG]" in out and b"* BYE [TOOBIG]" in out
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    out = _exchange(
        imap_port,
        b"a AUTHENTICATE PLAIN " + plain + b"\r\n",
        b"b APPEND INBOX {2147483648+}\r\n",
        b"From: x\r\n" * 100,
    )
    assert b"a OK" in out and b"b NO [TOOBIG]" in out and b"* BYE [TOOBIG]" in out
    out = _exchange(
        imap_port,
        b"a AUTHENTICATE PLAIN " + plain + b"\r\n",
        b'b LIST "" {4294967296}\r\n',
        b"c NOOP\r\n",
    )
    assert b"b NO [TOOBIG]" in out and b"c OK" in out


def test_compress_deflate_through_the_front_end(imap_port: int) -> None:
    """RFC 4978 against the real pair: advertised after login, the OK in clear, then
    both directions compressed; the back end never sees the compressed bytes."""
    with socket.create_connection(("127.0.0.1", imap_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        sock.sendall(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
        assert b"COMPRESS=DEFLATE" in reader.readline()
        deflated = Deflated(sock, reader)
        deflated.send(b"c CAPABILITY\r\nd SELECT INBOX\r\n")
        text = deflated.read_until(b"d OK")
        assert b"* CAPABILITY " in text and b"COMPRESS=DEFLATE" in text
        assert b"c OK" in text and b"d OK [READ-WRITE]" in text
        deflated.send(b"e LOGOUT\r\n")
        text = deflated.read_to_end()
        assert b"* BYE" in text and b"e OK" in text


def test_broken_compressed_stream_ends_the_session(imap_port: int) -> None:
    """The plaintext session was handed off: its back end, which does COMPRESS, says why
    in a compressed BYE and closes."""
    with socket.create_connection(("127.0.0.1", imap_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"a LOGIN {USER} {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        reader.readline()
        assert reader.readline() == b"b OK DEFLATE active\r\n"
        sock.sendall(b"\xff\xfe\xfd not deflate at all\r\n")
        bye = zlib.decompressobj(-15).decompress(reader.read())  # read() returns at close
        assert bye.startswith(b"* BYE bad DEFLATE data") and bye.endswith(b"\r\n")


def test_imap4rev2_through_the_front_end(imap_port: int) -> None:
    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=10) as client:
        assert "IMAP4REV2" in client.capabilities  # before login, from the front end
        client.login(USER, PASSWORD)
        client.append("INBOX", None, None, b"Subject: rev2\r\n\r\nbody\r\n")
        typ, data = client._simple_command("ENABLE", "IMAP4rev2")  # imaplib has no ENABLE
        assert typ == "OK" and client.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        typ, _ = client.select("INBOX")
        assert typ == "OK" and "RECENT" not in client.untagged_responses
        tag = client._command("SEARCH", "ALL")
        client._command_complete("SEARCH", tag)
        assert client.untagged_responses.pop("ESEARCH") == [
            f'(TAG "{tag.decode()}") ALL 1'.encode()
        ]
        client.logout()
