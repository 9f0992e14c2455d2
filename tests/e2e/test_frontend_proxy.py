"""Front ends in-process against tiny fake back ends, with real clients (imaplib, poplib).

The fake back end checks what the real ones must check (PROXY v2 header first, then the
proxy-secret SASL PLAIN login) and then answers a few commands, so these tests pin the
front end's side of the hand-over contract independently of the back ends.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from server.directory.throttle import LoginThrottle
from server.runtime import tls
from server.settings import store
from server.settings.models import IMAP4, POP3, default_server
from server.settings.paths import Home
from server.settings.types import LoginType
from tests.e2e.frontend_support import (
    PASSWORD,
    FakeBackend,
    bypass_validation,
    client_context,
    configure,
    free_port_plan,
    ports,
    save,
)


def front_end(env: Home, in_process: Any, protocol: str) -> Iterator[tuple[Any, FakeBackend]]:
    """The front end of `protocol` ("IMAP" or "POP") + a fake back end on the plain back-end
    port, with short login-failure delays."""
    server = store.load(env).settings.Servers["MBX01"]
    port = server.ImapBackEndPort if protocol == "IMAP" else server.PopBackEndPort
    configure(env, protocol, ProxyTargetPort=port)
    with FakeBackend(env, protocol, server.BackEndAddress, port) as backend:
        with in_process(IMAP4 if protocol == "IMAP" else POP3, env) as svc:
            svc.service.logins.throttle = LoginThrottle(base=0.01, cap=0.05)
            yield svc, backend


@pytest.fixture
def imap(env: Home, in_process: Any) -> Iterator[tuple[Any, FakeBackend]]:
    yield from front_end(env, in_process, "IMAP")


@pytest.fixture
def pop(env: Home, in_process: Any) -> Iterator[tuple[Any, FakeBackend]]:
    yield from front_end(env, in_process, "POP")


def whoami(client: imaplib.IMAP4) -> str:
    typ, _ = client.xatom("WHOAMI")
    assert typ == "OK"
    return client.response("WHOAMI")[1][0].decode()


# --------------------------------------------------------------------------- IMAP


def test_imap_starttls_login_and_proxy(env: Home, imap: Any) -> None:
    svc, backend = imap
    plain, _ = ports(env, "IMAP")
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        assert client.welcome == b"* OK The Microsoft Exchange IMAP4 service is ready."
        assert "LOGINDISABLED" in client.capabilities
        assert "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login("bob", PASSWORD)
        client.starttls(client_context(env))
        assert "LOGINDISABLED" not in client.capabilities
        assert "AUTH=PLAIN" in client.capabilities
        typ, data = client.login("bob@contoso.test", PASSWORD)
        assert typ == "OK" and b"Logged in" in data[0]
        assert client.untagged_responses.get("CAPABILITY") is None or True
        assert whoami(client) == "bob 127.0.0.1"
        client.logout()
    assert backend.logins == ["bob"]
    assert backend.proxied[0].client_address == "127.0.0.1"


def test_imap_capability_after_login_is_the_back_ends(env: Home, imap: Any) -> None:
    _, ssl_port = ports(env, "IMAP")
    sock = socket.create_connection(("127.0.0.1", ssl_port))
    conn = client_context(env).wrap_socket(sock, server_hostname="127.0.0.1")
    f = conn.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    f.write(b"a LOGIN bob " + PASSWORD.encode() + b"\r\nb NOOP\r\n")
    f.flush()
    # the back end's list, plus COMPRESS=DEFLATE that the front end does itself
    assert f.readline() == b"a OK [CAPABILITY IMAP4rev1 IDLE XFAKE COMPRESS=DEFLATE] Logged in.\r\n"
    assert f.readline() == b"b OK NOOP done\r\n"  # pipelined behind LOGIN: went to the back end
    conn.close()


def test_imap_implicit_tls_authenticate_plain(env: Home, imap: Any) -> None:
    _, ssl_port = ports(env, "IMAP")
    with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as client:
        assert "AUTH=PLAIN" in client.capabilities
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0alice\0{PASSWORD}".encode())
        assert typ == "OK"
        assert whoami(client) == "alice 127.0.0.1"


def test_imap_plain_text_login_types(env: Home, imap: Any) -> None:
    svc, _ = imap
    plain, _ = ports(env, "IMAP")
    configure(env, "IMAP", LoginType=LoginType.PlainTextAuthentication)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        assert {"LOGINDISABLED", "AUTH=PLAIN"} <= set(client.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login("bob", PASSWORD)
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0bob\0{PASSWORD}".encode())
        assert typ == "OK"
    configure(env, "IMAP", LoginType=LoginType.PlainTextLogin)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        assert "LOGINDISABLED" not in client.capabilities
        assert client.login("bob", PASSWORD)[0] == "OK"


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("bob", "wrong", "AUTHENTICATIONFAILED"),
        ("nobody", PASSWORD, "AUTHENTICATIONFAILED"),
        ("Administrator", PASSWORD, "Administrator mailbox cannot be opened"),
        # Before the password is proved, no refusal tells what kind of account it is.
        ("Administrator", "wrong", "AUTHENTICATIONFAILED"),
        ("carol", "wrong", "AUTHENTICATIONFAILED"),
        ("guest", "wrong", "AUTHENTICATIONFAILED"),
        ("guest", PASSWORD, "Guest accounts cannot use IMAP4"),
        ("anon", PASSWORD, "Anonymous accounts cannot use IMAP4"),
        ("carol", PASSWORD, "IMAP4 is disabled for this mailbox"),
    ],
)
def test_imap_refusals(env: Home, imap: Any, user: str, password: str, expected: str) -> None:
    _, ssl_port = ports(env, "IMAP")
    _, backend = imap
    with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as client:
        with pytest.raises(imaplib.IMAP4.error, match=expected):
            client.login(user, password)
    assert backend.logins == []


def test_imap_too_many_failures_close_the_connection(env: Home, imap: Any) -> None:
    plain, _ = ports(env, "IMAP")
    configure(env, "IMAP", LoginType=LoginType.PlainTextLogin)
    imap[0].reload()
    client = imaplib.IMAP4("127.0.0.1", plain)
    for _ in range(3):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("bob", "bad")
    with pytest.raises(imaplib.IMAP4.abort):
        client.noop()
    client.shutdown()


def test_failed_logins_are_slowed_down(env: Home, imap: Any) -> None:
    svc, _ = imap
    svc.service.logins.throttle = LoginThrottle(base=0.2, cap=0.4)
    plain, _ = ports(env, "IMAP")
    configure(env, "IMAP", LoginType=LoginType.PlainTextLogin)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        with pytest.raises(imaplib.IMAP4.error):
            client.login("bob", "bad")
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error):
            client.login("bob", "bad")
        assert time.monotonic() - started >= 0.2
    with imaplib.IMAP4("127.0.0.1", plain) as client:  # the address is remembered too
        started = time.monotonic()
        assert client.login("alice", PASSWORD)[0] == "OK"
        assert time.monotonic() - started >= 0.4


def test_imap_connection_limits(env: Home, imap: Any) -> None:
    svc, _ = imap
    plain, _ = ports(env, "IMAP")
    configure(env, "IMAP", MaxConnectionFromSingleIP=1, LoginType=LoginType.PlainTextLogin)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain):
        with pytest.raises(imaplib.IMAP4.error, match=r"BYE \[UNAVAILABLE\]"):
            imaplib.IMAP4("127.0.0.1", plain)
    configure(env, "IMAP", MaxConnectionFromSingleIP=10, MaxConnections=2)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain), imaplib.IMAP4("127.0.0.1", plain):
        with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
            imaplib.IMAP4("127.0.0.1", plain)
    configure(env, "IMAP", MaxConnections=10, MaxConnectionsPerUser=1)
    svc.reload()
    with imaplib.IMAP4("127.0.0.1", plain) as first, imaplib.IMAP4("127.0.0.1", plain) as second:
        first.login("bob", PASSWORD)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
            second.login("bob", PASSWORD)
        assert second.login("alice", PASSWORD)[0] == "OK"
        first.logout()
    # the count drops when the session ends
    with imaplib.IMAP4("127.0.0.1", plain) as third:
        assert third.login("bob", PASSWORD)[0] == "OK"


def test_imap_preauth_timeout_and_command_size(env: Home, imap: Any) -> None:
    svc, _ = imap
    plain, _ = ports(env, "IMAP")
    bypass_validation(svc, "IMAP", PreAuthenticatedConnectionTimeout=timedelta(seconds=0.3))
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        f = sock.makefile("rwb")
        f.readline()
        assert f.readline().startswith(b"* BYE Connection timed out")
        assert f.readline() == b""
    bypass_validation(svc, "IMAP", MaxCommandSize=100)
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        f = sock.makefile("rwb")
        f.readline()
        f.write(b"a LOGIN " + b"x" * 200 + b" y\r\nb NOOP\r\n")
        f.flush()
        assert f.readline().startswith(b"a BAD [TOOBIG]")
        assert f.readline() == b"b OK NOOP completed.\r\n"


def test_imap_starttls_drops_pipelined_plaintext(env: Home, imap: Any) -> None:
    plain, _ = ports(env, "IMAP")
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        assert f.readline().startswith(b"a OK")
        conn = client_context(env).wrap_socket(sock, server_hostname="127.0.0.1")
        conn.sendall(b"c NOOP\r\n")
        tf = conn.makefile("rb")
        assert tf.readline() == b"c OK NOOP completed.\r\n"  # no answer for "b" came first
        conn.close()


def test_imap_backend_down_then_back(env: Home, in_process: Any) -> None:
    server = store.load(env).settings.Servers["MBX01"]
    configure(env, "IMAP", ProxyTargetPort=server.ImapBackEndPort)
    _, ssl_port = ports(env, "IMAP")
    with in_process(IMAP4, env):
        with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as client:
            with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
                client.login("bob", PASSWORD)
            with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndPort):
                assert client.login("bob", PASSWORD)[0] == "OK"  # same connection, retried


def test_imap_backend_dies_mid_session(env: Home, imap: Any) -> None:
    _, backend = imap
    _, ssl_port = ports(env, "IMAP")
    client = imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env))
    client.login("bob", PASSWORD)
    backend.kill_sessions()
    with pytest.raises(imaplib.IMAP4.abort):
        client.noop()
    assert client.untagged_responses["BYE"] == [
        b"[UNAVAILABLE] The connection to the mailbox server was lost."
    ]
    client.shutdown()


def test_imap_backend_over_tls(env: Home, in_process: Any) -> None:
    """Default ProxyTargetPort: the back end's SSL port, certificate checked when
    EnforceCertificateErrors is on."""
    settings = store.load(env).settings
    server = settings.Servers["MBX01"]
    configure(env, "IMAP", EnforceCertificateErrors=True)
    cert = tls.ensure_certificate(env, "IMAP", server.Fqdn)
    context = tls.server_context(cert)
    _, ssl_port = ports(env, "IMAP")
    with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndSSLPort, context) as be:
        with in_process(IMAP4, env):
            with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as c:
                assert c.login("bob", PASSWORD)[0] == "OK"
                assert whoami(c) == "bob 127.0.0.1"
    assert be.logins == ["bob"]


def test_imap_relay_moves_big_responses(env: Home, imap: Any) -> None:
    _, ssl_port = ports(env, "IMAP")
    with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as client:
        client.login("bob", PASSWORD)
        typ, data = client.xatom("BIG", "3000000")
        assert typ == "OK"
        assert client.response("BIG")[1][0][1] == b"x" * 3000000


def test_reload_changes_banner_and_bindings(env: Home, imap: Any) -> None:
    svc, _ = imap
    plain, _ = ports(env, "IMAP")
    new_port = free_port_plan().imap
    settings = store.load(env).settings
    imap_settings = settings.Servers["MBX01"].ImapSettings
    imap_settings.Banner = "Hello from the test"
    imap_settings.UnencryptedOrTLSBindings = [f"127.0.0.1:{new_port}"]
    with imaplib.IMAP4("127.0.0.1", plain) as old:
        save(env, settings)
        svc.reload()
        with imaplib.IMAP4("127.0.0.1", new_port) as client:
            assert client.welcome == b"* OK Hello from the test"
        with pytest.raises(OSError):
            imaplib.IMAP4("127.0.0.1", plain)
        assert old.noop()[0] == "OK"  # established connections survive the reload


def test_routing_across_two_servers(env: Home, in_process: Any) -> None:
    settings = store.load(env).settings
    one = settings.Servers["MBX01"]
    one.BackEndAddress = "127.0.0.2"
    plan = free_port_plan(backend_address="127.0.0.3")
    two = default_server("MBX02", "mbx02.contoso.test", plan)
    settings.Servers["MBX02"] = two
    one.ImapSettings.ProxyTargetPort = one.ImapBackEndPort  # plain: the target's plain port
    settings.Mailboxes["alice"].Server = "MBX02"
    save(env, settings)
    _, ssl_port = ports(env, "IMAP")
    with (
        FakeBackend(env, "IMAP", "127.0.0.2", one.ImapBackEndPort) as b1,
        FakeBackend(env, "IMAP", "127.0.0.3", two.ImapBackEndPort) as b2,
        in_process(IMAP4, env),
    ):
        for user in ("bob", "alice"):
            with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=client_context(env)) as c:
                c.login(user, PASSWORD)
                assert whoami(c) == f"{user} 127.0.0.1"
    assert (b1.logins, b2.logins) == (["bob"], ["alice"])


def test_status_counts_connections(env: Home, imap: Any) -> None:
    svc, _ = imap
    plain, _ = ports(env, "IMAP")
    with imaplib.IMAP4("127.0.0.1", plain) as client:
        client.noop()
        status = svc.service.status()
        assert status["connections"] == 1
        assert any(str(plain) in ep for ep in status["endpoints"])


# --------------------------------------------------------------------------- POP3


def test_pop_stls_user_pass(env: Home, pop: Any) -> None:
    _, backend = pop
    plain, _ = ports(env, "POP")
    client = poplib.POP3("127.0.0.1", plain)
    assert client.getwelcome() == b"+OK The Microsoft Exchange POP3 service is ready."
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    with pytest.raises(poplib.error_proto, match="AUTH"):
        client.user("bob")
    client.stls(client_context(env))
    assert "USER" in client.capa()
    client.user("bob")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    assert client.stat() == (3, 0)  # the fake back end answers len(user)
    client.quit()
    assert backend.logins == ["bob"]


def test_pop_implicit_tls_auth_plain_and_refusals(env: Home, pop: Any) -> None:
    _, ssl_port = ports(env, "POP")
    client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(env))
    with pytest.raises(poplib.error_proto, match="Administrator"):
        client.user("Administrator")
        client.pass_(PASSWORD)
    with pytest.raises(poplib.error_proto, match="AUTH"):
        client.user("bob")
        client.pass_("wrong")
    ir = base64.b64encode(f"\0carol\0{PASSWORD}".encode()).decode()
    with pytest.raises(poplib.error_proto, match="POP3 is disabled"):
        client._shortcmd(f"AUTH PLAIN {ir}")
    client.close()
    client = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(env))
    ir = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    assert client._shortcmd(f"AUTH PLAIN {ir}").startswith(b"+OK")
    assert client.stat() == (5, 0)
    client.quit()


def test_pop_limits_and_backend_death(env: Home, pop: Any) -> None:
    svc, backend = pop
    plain, ssl_port = ports(env, "POP")
    configure(env, "POP", MaxConnectionFromSingleIP=1)
    svc.reload()
    first = poplib.POP3_SSL("127.0.0.1", ssl_port, context=client_context(env))
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        poplib.POP3("127.0.0.1", plain)
    first.user("bob")
    first.pass_(PASSWORD)
    backend.kill_sessions()
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        first.stat()
    first.close()
