"""APPEND extensions, BINARY and URLAUTH end to end: clients talk to the front end
(MSExchangeIMAP4, PlainTextLogin) in front of the real back end and store."""

from __future__ import annotations

import imaplib
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import PASSWORD, ports

pytestmark = pytest.mark.e2e
IMAPTEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "imaptest" / "run"

B64 = (
    b"From: bob@contoso.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8g\r\nd29ybGQ=\r\n--b\r\nContent-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nbar\r\n--b--\r\n"
)


@pytest.fixture
def site(imap_site: Home) -> tuple[Home, int]:
    return imap_site, ports(imap_site, "IMAP")[0]  # bob and alice, both on MBX01


class Raw:
    """A bare IMAP client for what imaplib cannot send (literal8, several literals)."""

    def __init__(self, port: int, user: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.n = 0
        self._line()
        assert b" OK " in self.cmd(f'LOGIN {user} "{PASSWORD}"'.encode())

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def cmd(self, command: bytes) -> bytes:
        """Send `command` (literals as {n+} / ~{n+}); everything up to the tagged line."""
        self.n += 1
        tag = b"r%d" % self.n
        self.sock.sendall(tag + b" " + command + b"\r\n")
        out = b""
        while True:
            line = self._line()
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                out += self._take(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                return out

    def close(self) -> None:
        self.sock.close()


def login(port: int, user: str = "bob") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(user, PASSWORD)
    return client


def test_capabilities_after_login(site: tuple[Home, int]) -> None:
    _, port = site
    with login(port) as client:
        caps = set(client.capability()[1][0].decode().split())
        assert {"BINARY", "MULTIAPPEND", "CATENATE", "URLAUTH", "URLAUTH=BINARY"} <= caps


def test_binary_fetch_and_literal8_append(site: tuple[Home, int]) -> None:
    _, port = site
    with login(port) as client:
        assert client.append("INBOX", None, None, B64)[0] == "OK"
        client.select("INBOX")
        typ, data = client.fetch("1", "(BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2])")
        assert typ == "OK"
        assert b"BINARY.SIZE[1] 11" in data[0][0]
        assert data[0][1] == b"hello world" and data[1][1] == b"caf\xc3\xa9 bar"
    raw = Raw(port, "bob")
    msg = (
        b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\xfe\r\n"
    )
    out = raw.cmd(b"APPEND INBOX ~{%d+}\r\n" % len(msg) + msg)
    assert b"OK [APPENDUID" in out, out
    raw.cmd(b"SELECT INBOX")
    out = raw.cmd(b"FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1])")
    body = out.split(b"BODY[1] ", 1)[1]
    assert b"\x00" not in body.split(b" BINARY[1]")[0]  # a plain literal carries no NUL
    assert b"BINARY[1] ~{5}\r\n\x00\x01\xfe\r\n" in out
    out = raw.cmd(b"APPEND INBOX {3+}\r\nabc")  # literal8 only where allowed
    assert b"OK" in out
    out = raw.cmd(b"LOGIN ~{3+}\r\nabc x")
    assert re.search(rb"r\d+ BAD", out)
    raw.close()


def test_multiappend_catenate_are_atomic(site: tuple[Home, int]) -> None:
    home, port = site
    raw = Raw(port, "bob")
    out = raw.cmd(
        b"APPEND INBOX {%d+}\r\n" % len(B64) + B64 + b" (\\Flagged) {11+}\r\nA: b\r\n\r\nxyz"
    )
    assert re.search(rb"OK \[APPENDUID \d+ 1:2\]", out), out
    out = raw.cmd(
        b'APPEND INBOX CATENATE (TEXT {14+}\r\nSubject: cat\r\n URL "/INBOX/;uid=1/;section=1.MIME"'
        b' URL "/INBOX/;uid=1/;section=1") CATENATE (URL "/INBOX/;uid=2")'
    )
    assert re.search(rb"OK \[APPENDUID \d+ 3:4\]", out), out
    out = raw.cmd(b'APPEND INBOX {8+}\r\nA: 1\r\n\r\n CATENATE (URL "/INBOX/;uid=77")')
    assert b"NO [BADURL /INBOX/;uid=77]" in out
    out = raw.cmd(b'APPEND Missing CATENATE (URL "/INBOX/;uid=1")')
    assert b"NO [TRYCREATE]" in out
    raw.close()
    with open_store(home, "MBX01") as store:
        box = store.mailbox("bob")
        assert box.status("INBOX").messages == 4  # the failed MULTIAPPEND stored nothing
        assert box.read("INBOX", 3) == (
            b"Subject: cat\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"aGVsbG8g\r\nd29ybGQ="
        )
        assert box.read("INBOX", 4) == box.read("INBOX", 2)


def test_big_append_is_streamed_to_the_store(site: tuple[Home, int]) -> None:
    home, port = site
    line = b"z" * 998 + b"\r\n"
    message = b"Subject: big\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))
    with login(port) as client:
        typ, data = client.append("INBOX", None, None, message)
        assert typ == "OK", data
        client.select("INBOX")
        typ, data = client.fetch("1", "(RFC822.SIZE BINARY.SIZE[])")
        assert f"RFC822.SIZE {len(message)} BINARY.SIZE[] {len(message)}".encode() in data[0]
    with open_store(home, "MBX01") as store:
        box = store.mailbox("bob")
        assert box.read("INBOX", 1) == message
        assert len(list(box.msgs.iterdir())) == 1  # no temp file left behind


def test_urlauth_across_users_and_resetkey(site: tuple[Home, int]) -> None:
    _, port = site
    bob = Raw(port, "bob")
    bob.cmd(b"APPEND INBOX {%d+}\r\n" % len(B64) + B64)
    rump = b"imap://bob@contoso.test/INBOX/;uid=1/;section=2;urlauth=authuser"
    out = bob.cmd(b'GENURLAUTH "%s" INTERNAL' % rump)
    m = re.search(rb'\* GENURLAUTH "([^"]+)"', out)
    assert m, out
    url = m.group(1)
    out = bob.cmd(b'GENURLAUTH "imap://alice@contoso.test/INBOX/;uid=1;urlauth=authuser" INTERNAL')
    assert b"NO" in out  # only for one's own mailboxes
    alice = Raw(port, "alice")
    out = alice.cmd(b'URLFETCH "%s" ("%s" BINARY)' % (url, url))
    assert b"caf=C3=A9 =\r\nbar" in out and b"(BINARY {9}\r\ncaf\xc3\xa9 bar)" in out, out
    forged = url[:-4] + (b"0000" if not url.endswith(b"0000") else b"1111")
    assert b'"%s" NIL' % forged in alice.cmd(b'URLFETCH "%s"' % forged)
    user_only = rump.replace(b"authuser", b"user+bob")
    out = bob.cmd(b'GENURLAUTH "%s" INTERNAL' % user_only)
    bob_url = re.search(rb'\* GENURLAUTH "([^"]+)"', out).group(1)  # type: ignore[union-attr]
    assert b'"%s" NIL' % bob_url in alice.cmd(b'URLFETCH "%s"' % bob_url)
    assert b"caf=C3=A9" in bob.cmd(b'URLFETCH "%s"' % bob_url)
    assert b"OK" in bob.cmd(b"RESETKEY")
    assert b'"%s" NIL' % url in alice.cmd(b'URLFETCH "%s"' % url)
    bob.close()
    alice.close()


GROUPS = (
    "fetch-binary-mime",
    "fetch-binary-mime-base64",
    "fetch-binary-mime-qp",
    "append-binary",
    "multiappend",
    "catenate",
    "catenate-multiappend",
    "urlauth",
    "urlauth-binary",
)


@pytest.mark.parametrize("group", GROUPS)
def test_imaptest_groups(site: tuple[Home, int], group: str) -> None:
    if not IMAPTEST.exists() or shutil.which("timeout") is None:
        pytest.skip("the imaptest suite (../shared/imaptest) is not installed here")
    _, port = site
    run = subprocess.run(
        [str(IMAPTEST), "127.0.0.1", str(port), "bob", PASSWORD, group],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 test groups: 0 failed, 0 skipped" in run.stdout
