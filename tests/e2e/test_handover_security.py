"""The hand-over under attack, with the real services (docs/security.md, "Local users" and
"The network between hosts").

- A local non-root user who binds a stopped back end's port gets the front end's connection:
  it must learn nothing it can use at the real back end afterwards.
- An eavesdropper on a plain hop records a whole good hand-over: replaying it fails.
- Before a peer has proved itself the back end reads a few KB at most, for a fixed time, and
  only so many such peers at once.
"""

from __future__ import annotations

import base64
import binascii
import imaplib
import json
import os
import poplib
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.directory import proxy_secret
from server.protocols import handover
from server.settings import store
from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE
from server.settings.paths import Home
from tests.e2e.frontend_support import (
    PASSWORD,
    client_context,
    configure,
    ports,
)
from tests.e2e.handover_support import hand_over, read_line

pytestmark = pytest.mark.e2e

SYSTEM_PYTHON = "/usr/bin/python3"  # stdlib only; readable by any user, unlike a venv under /root

# The impostor: only the standard library, nothing from the project or the home (which its
# user cannot read). It binds the back end's port, plays a back end as well as it can, and
# prints everything the front end sent it.
#   legacy: greets like the IMAP/POP3 back ends did before the hand-over existed (the front
#           end then sent the proxy secret in AUTHENTICATE/AUTH PLAIN);
#   challenge: sends a well-formed challenge, then a proof made up without the secret.
IMPOSTOR = r"""
import base64, json, os, secrets, socket, ssl, sys
host, port, protocol, server, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, port))
listener.listen(5)
print("READY", os.getuid(), flush=True)
listener.settimeout(30)
conn, _ = listener.accept()
conn.settimeout(5)
if len(sys.argv) > 7:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[6], sys.argv[7])
    try:
        conn = ctx.wrap_socket(conn, server_side=True)
    except (OSError, ssl.SSLError) as exc:  # the front end refused our certificate
        print(json.dumps({"uid": os.getuid(), "captured": "", "tls": str(exc)}), flush=True)
        sys.exit(0)
if mode == "legacy":
    conn.sendall(b"* OK IMAP4rev1 ready\r\n" if protocol == "IMAP4" else b"+OK POP3 ready\r\n")
else:
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    conn.sendall(b"MCHO1 CHALLENGE %s %s %s\r\n" % (protocol.encode(), server.encode(), nonce))
captured, answered = b"", False
try:
    while True:
        data = conn.recv(65536)
        if not data:
            break
        captured += data
        if mode == "challenge" and not answered and b"\n" in captured:
            answered = True
            conn.sendall(b"MCHO1 PROOF " + secrets.token_hex(32).encode() + b"\r\n")
        elif mode == "legacy":
            conn.sendall(b"P1 OK [CAPABILITY IMAP4rev1] go on\r\n" if protocol == "IMAP4"
                         else b"+OK go on\r\n")
except (OSError, ssl.SSLError):
    pass
print(json.dumps({"uid": os.getuid(), "captured": captured.hex()}), flush=True)
"""


@pytest.fixture
def local_user() -> Iterator[tuple[int, int] | None]:
    """(uid, gid) of a throwaway local user made for the test when running as root; None
    when not root (the impostor then runs as this non-root user, which is the attacker's
    position too: any user may bind a port above 1023)."""
    if os.geteuid() != 0:
        yield None
        return
    if shutil.which("useradd") is None:
        pytest.skip("running as root without useradd: cannot make an unprivileged user")
    name = "mctlimp" + secrets.token_hex(3)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def impostor_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate of the impostor's own (it cannot read the server's key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mbx01.contoso.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (cert_file, key_file):
        path.chmod(0o644)
    return cert_file, key_file


class Impostor:
    def __init__(
        self,
        port: int,
        protocol: str,
        mode: str,
        user: tuple[int, int] | None,
        tls_files: tuple[Path, Path] | None,
    ) -> None:
        args = [
            SYSTEM_PYTHON,
            "-I",
            "-c",
            IMPOSTOR,
            "127.0.0.1",
            str(port),
            protocol,
            "MBX01",
            mode,
        ]
        if tls_files:
            args += [str(tls_files[0]), str(tls_files[1])]

        def drop_privileges() -> None:
            if user is not None:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])

        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            preexec_fn=drop_privileges,
            env={},
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        if ready[:1] != [b"READY"]:
            self.proc.kill()
            raise AssertionError(f"impostor did not start: {self.proc.stderr.read()!r}")
        self.uid = int(ready[1])

    def report(self) -> bytes:
        assert self.proc.stdout is not None
        out, err = self.proc.communicate(timeout=30)
        result = json.loads(out)
        return bytes.fromhex(result["captured"])


def client_login(env: Home, protocol: str) -> str:
    """A real client logs in at the front end (implicit TLS); returns the refusal text."""
    _, ssl_port = ports(env, "IMAP" if protocol == "IMAP4" else "POP")
    if protocol == "IMAP4":
        with imaplib.IMAP4_SSL(
            "127.0.0.1", ssl_port, ssl_context=client_context(env), timeout=20
        ) as client:
            with pytest.raises(imaplib.IMAP4.error) as refused:
                client.login("alice", PASSWORD)
            return str(refused.value)
    client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(env), timeout=20)
    try:
        client.user("alice")
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_(PASSWORD)
        return str(refused.value)
    finally:
        client.close()


def imaps_select(env: Home) -> None:
    """A real client logs in at the IMAP front end (implicit TLS) and selects its INBOX."""
    _, ssl_port = ports(env, "IMAP")
    with imaplib.IMAP4_SSL(
        "127.0.0.1", ssl_port, ssl_context=client_context(env), timeout=20
    ) as client:
        client.login("alice", PASSWORD)
        assert client.select("INBOX")[0] == "OK"
        client.logout()


def candidate_secrets(captured: bytes) -> set[bytes]:
    """Everything in the capture that could be a password: each token, and each part of
    each token that decodes as base64 (SASL PLAIN's authzid\\0authcid\\0password)."""
    found: set[bytes] = set()
    for token in captured.split():
        found.add(token)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                found.update(decode(token + b"=" * (-len(token) % 4)).split(b"\0"))
            except (binascii.Error, ValueError):
                pass
    return {c for c in found if c}


@pytest.mark.parametrize(
    ("protocol", "hop", "mode"),
    [
        ("IMAP4", "plain", "legacy"),
        ("IMAP4", "plain", "challenge"),
        ("IMAP4", "tls", "challenge"),
        ("POP3", "plain", "legacy"),
        ("POP3", "plain", "challenge"),
        ("POP3", "tls", "legacy"),
        ("IMAP4", "tls-enforced", "challenge"),
    ],
)
def test_an_impostor_on_a_stopped_back_end_port_learns_nothing_it_can_use(
    env: Home,
    in_process: Any,
    local_user: tuple[int, int] | None,
    protocol: str,
    hop: str,
    mode: str,
) -> None:
    kind = "IMAP" if protocol == "IMAP4" else "POP"
    server = store.load(env).settings.Servers["MBX01"]
    plain, ssl_port = (
        (server.ImapBackEndPort, server.ImapBackEndSSLPort)
        if kind == "IMAP"
        else (server.PopBackEndPort, server.PopBackEndSSLPort)
    )
    if hop == "plain":
        configure(env, kind, ProxyTargetPort=plain)
    elif hop == "tls-enforced":
        # The impostor's certificate is not from the organization's CA: the front end
        # stops in the TLS handshake, before the hand-over's first byte.
        configure(env, kind, EnforceCertificateErrors=True)
    secret = proxy_secret(env).encode()
    folder = Path(tempfile.mkdtemp(prefix="impostor-"))
    folder.chmod(0o755)
    try:
        tls_files = impostor_cert(folder) if hop.startswith("tls") else None
        port = plain if hop == "plain" else ssl_port
        # The back end is stopped; the impostor, not root, takes its port.
        impostor = Impostor(port, protocol, mode, local_user, tls_files)
        assert impostor.uid != 0
        with in_process(IMAP4 if kind == "IMAP" else POP3, env):
            refusal = client_login(env, protocol)
        captured = impostor.report()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert "not available" in refusal  # the client is told to come back later, nothing more

    # What the impostor saw: at most a nonce. Not the secret, not who, not from where.
    assert secret not in captured and base64.b64encode(secret) not in captured
    assert b"alice" not in captured and handover._b64(b"alice") not in captured
    assert b"127.0.0.1" not in captured
    if mode == "legacy" or hop == "tls-enforced":
        assert captured == b""  # no challenge, or no trusted certificate: not a byte
    else:
        [line] = captured.splitlines()
        assert line.startswith(b"MCHO1 HELLO ") and len(line.split()) == 3

    # Now the real back end is back: use what was captured against it.
    with in_process(IMAP4BE if kind == "IMAP" else POP3BE, env) as backend:
        real_port = backend.service.bound_port(tls_port=False)
        for candidate in candidate_secrets(captured):
            with socket.create_connection(("127.0.0.1", real_port), timeout=10) as sock:
                with pytest.raises(handover.ImpostorError):  # not the secret the back end has
                    hand_over(sock, candidate, "alice", protocol)
        if captured:
            with socket.create_connection(("127.0.0.1", real_port), timeout=10) as sock:
                assert read_line(sock).startswith(b"MCHO1 CHALLENGE ")
                sock.sendall(captured)  # the captured HELLO, replayed
                assert read_line(sock).startswith(b"MCHO1 PROOF ")
                # A LOGIN needs a proof over the back end's new nonce: the best guess fails.
                sock.sendall(
                    b"MCHO1 LOGIN %s %s %s\r\n"
                    % (
                        handover._b64(b"alice"),
                        handover._b64(b"\r\n\r\n\x00\r\nQUIT\n \x00\x00"),
                        b"00" * 32,
                    )
                )
                assert sock.recv(100) == b""  # closed, no OK


class Recorder:
    """A plain-hop eavesdropper: relays front end <-> back end and keeps the front end's bytes."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_frontend = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
            try:
                while data := src.recv(65536):
                    if record:
                        self.from_frontend += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, conn, False), daemon=True)
        back.start()
        pump(conn, upstream, True)
        back.join(5)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_a_recorded_hand_over_replayed_to_the_back_end_is_refused(
    env: Home, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relayed hand-over over TCP (a mailbox on another host): recorded on that hop.
    monkeypatch.setenv("MAILCTL_HANDOFF", "off")
    server = store.load(env).settings.Servers["MBX01"]
    with in_process(IMAP4BE, env) as backend:
        recorder = Recorder(backend.service.bound_port())
        configure(env, "IMAP", ProxyTargetPort=recorder.port)  # the hop goes through it
        with in_process(IMAP4, env):
            imaps_select(env)
        recorder.close()
        hello, login = recorder.from_frontend.split(b"\r\n", 2)[:2]
        assert hello.startswith(b"MCHO1 HELLO ") and login.startswith(b"MCHO1 LOGIN ")
        assert proxy_secret(env).encode() not in recorder.from_frontend
        with socket.create_connection(("127.0.0.1", server.ImapBackEndPort), timeout=10) as sock:
            assert read_line(sock).startswith(b"MCHO1 CHALLENGE ")
            sock.sendall(hello + b"\r\n")
            assert read_line(sock).startswith(b"MCHO1 PROOF ")
            sock.sendall(login + b"\r\n")
            assert sock.recv(100) == b""  # the old proof is for the old nonce: closed


# --------------------------------------------------------------------------- pre-auth limits


@pytest.fixture
def imap_backend(env: Home, in_process: Any) -> Iterator[Any]:
    with in_process(IMAP4BE, env) as run:
        yield run


def connect(run: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", run.service.bound_port()), timeout=10)
    assert read_line(sock).startswith(b"MCHO1 CHALLENGE ")
    return sock


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_an_imap_literal_before_the_hand_over_is_never_accepted(imap_backend: Any) -> None:
    with connect(imap_backend) as sock:
        sock.sendall(b"a APPEND INBOX {50000000}\r\n")
        assert closed(sock)  # no "+ go ahead", no reading of 50 MB


def test_a_back_end_reads_a_few_kb_at_most_before_the_proof(imap_backend: Any) -> None:
    with connect(imap_backend) as sock:
        sent = 0
        with pytest.raises(OSError):
            for _ in range(1000):  # 8 MB offered; the back end stops taking them
                sock.sendall(b"x" * 8192)
                sent += 8192
        assert sent < 4 * 1024 * 1024  # the socket buffers, not the back end, took the rest
    with connect(imap_backend) as sock:
        sock.sendall(b"MCHO1 HELLO " + b"A" * (handover.MAX_LINE + 10))
        assert closed(sock)


def test_the_hand_over_deadline_is_not_extended_by_bytes(imap_backend: Any) -> None:
    imap_backend.service.handover_deadline = 0.6
    with connect(imap_backend) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        gone = False
        while time.monotonic() - started < 5 and not gone:
            try:
                sock.sendall(b"M")  # a byte every 100 ms, never a whole line
                gone = sock.recv(10) == b""
            except TimeoutError:
                continue
            except OSError:
                gone = True
        assert gone
        assert time.monotonic() - started < 2.0


def test_connections_in_the_hand_over_are_capped(imap_backend: Any) -> None:
    imap_backend.service.max_unauthenticated = 2
    first, second = connect(imap_backend), connect(imap_backend)
    with socket.create_connection(
        ("127.0.0.1", imap_backend.service.bound_port()), timeout=10
    ) as third:
        assert closed(third)  # no challenge: closed at once
    first.close()
    deadline = time.monotonic() + 5
    while imap_backend.service.unauthenticated > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with connect(imap_backend):  # a place is free again
        pass
    second.close()
    # A proved front end is no longer counted: sessions are not capped by this.
    secret = proxy_secret(imap_backend.home)
    sessions = []
    for _ in range(3):
        sock = socket.create_connection(
            ("127.0.0.1", imap_backend.service.bound_port()), timeout=10
        )
        hand_over(sock, secret, "alice", "IMAP4")
        assert read_line(sock).startswith(b"* PREAUTH")
        sessions.append(sock)
    for sock in sessions:
        sock.close()


def test_pop3_back_end_has_the_same_limits(env: Home, in_process: Any) -> None:
    with in_process(POP3BE, env) as run:
        run.service.handover_deadline = 0.5
        with connect(run) as sock:
            sock.sendall(b"USER alice\r\n")
            assert closed(sock)
        with connect(run) as sock:
            started = time.monotonic()
            assert closed(sock)  # silent peer: closed at the deadline
            assert time.monotonic() - started < 2.0
        run.service.max_unauthenticated = 1
        with connect(run):
            with socket.create_connection(
                ("127.0.0.1", run.service.bound_port()), timeout=10
            ) as other:
                assert closed(other)


@pytest.mark.parametrize(
    ("protocol", "enforce"), [("IMAP4", True), ("POP3", True), ("IMAP4", False)]
)
def test_real_front_and_back_end_over_the_tls_hop(
    env: Home, in_process: Any, protocol: str, enforce: bool
) -> None:
    """The default hop (the back end's SSL port), the back end's certificate checked against
    the organization's CA and the server's Fqdn when EnforceCertificateErrors is on."""
    kind = "IMAP" if protocol == "IMAP4" else "POP"
    configure(env, kind, EnforceCertificateErrors=enforce)
    backend_name, frontend_name = (IMAP4BE, IMAP4) if kind == "IMAP" else (POP3BE, POP3)
    with in_process(backend_name, env), in_process(frontend_name, env):
        if kind == "IMAP":
            imaps_select(env)
        else:
            _, ssl_port = ports(env, kind)
            client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(env), timeout=20)
            client.user("alice")
            client.pass_(PASSWORD)
            assert client.stat() == (0, 0)
            client.quit()


def test_a_tls_handshake_that_never_comes_is_cut_off(
    env: Home, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.backend import service as common

    monkeypatch.setattr(common, "HANDOVER_DEADLINE", 0.5)
    with in_process(IMAP4BE, env) as run:
        port = run.service.bound_port(tls_port=True)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"\x16")  # one byte of a ClientHello, then nothing
            assert closed(sock)
            assert time.monotonic() - started < 3.0
