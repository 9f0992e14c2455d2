"""What the front end keeps between sessions for speed (the back-end TLS client context, the
proxy secret) must follow the files it came from: a new private CA or a rotated secret
applies to the next session without a restart."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from typing import Any

import pytest

from server.directory import proxy_secret
from server.runtime import tls
from server.settings import store
from server.settings.models import IMAP4
from server.settings.paths import Home
from server.settings.store import atomic_write
from tests.e2e.frontend_support import (
    PASSWORD,
    FakeBackend,
    client_context,
    configure,
    ports,
)


def login_and_logout(home: Home, context: ssl.SSLContext | None = None) -> None:
    _, ssl_port = ports(home, "IMAP")
    context = context or client_context(home)
    with imaplib.IMAP4_SSL("127.0.0.1", ssl_port, ssl_context=context) as client:
        assert client.login("bob", PASSWORD)[0] == "OK"
        assert client.noop()[0] == "OK"


def test_client_context_is_reused_until_the_ca_file_changes(env: Home) -> None:
    first = tls.shared_client_context(env, verify=True)
    assert tls.shared_client_context(env, verify=True) is first
    assert tls.shared_client_context(env, verify=False) is not first
    ca_file = tls.ca_paths(env)[0]
    atomic_write(ca_file, ca_file.read_bytes())  # same bytes, new file: looked at again
    assert tls.shared_client_context(env, verify=True) is not first


def test_a_new_ca_is_trusted_from_the_next_session(env: Home, in_process: Any) -> None:
    server = store.load(env).settings.Servers["MBX01"]
    configure(env, "IMAP", EnforceCertificateErrors=True)  # the cached context must verify

    def backend() -> FakeBackend:
        cert = tls.ensure_certificate(env, "IMAP", server.Fqdn)
        return FakeBackend(
            env, "IMAP", server.BackEndAddress, server.ImapBackEndSSLPort, tls.server_context(cert)
        )

    with in_process(IMAP4, env):
        # The front end keeps serving its certificate from the first CA: the client trusts that.
        to_frontend = client_context(env)
        with backend() as first:
            login_and_logout(env, to_frontend)
        assert first.logins == ["bob"]
        # A new CA and a back-end certificate signed by it: a context cached forever would
        # refuse the back end now.
        for path in [*tls.ca_paths(env), tls._index_path(env)]:
            path.unlink()
        with backend() as second:
            login_and_logout(env, to_frontend)
        assert second.logins == ["bob"]


def test_a_rotated_proxy_secret_is_sent_from_the_next_session(
    env: Home,
    in_process: Any,
) -> None:
    server = store.load(env).settings.Servers["MBX01"]
    configure(env, "IMAP", ProxyTargetPort=server.ImapBackEndPort)
    with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndPort) as backend:
        with in_process(IMAP4, env):
            login_and_logout(env)
            old = proxy_secret(env)
            atomic_write(env.secrets / "proxy-secret", b"rotated-" + old.encode(), mode=0o600)
            login_and_logout(env)  # the fake back end checks against the file's new value
    assert backend.logins == ["bob", "bob"]


@pytest.mark.parametrize("tickets", [True, False])
def test_backend_contexts_send_no_session_tickets(env: Home, tickets: bool) -> None:
    """The back ends' contexts (session_tickets=False): a front end never resumes, so a ticket
    would only cost the back end CPU and the front end memory for the connection's life."""
    server = store.load(env).settings.Servers["MBX01"]
    cert = tls.ensure_certificate(env, "IMAP", server.Fqdn)

    async def main() -> bool:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(
            echo, "127.0.0.1", 0, ssl=tls.server_context(cert, session_tickets=tickets)
        )
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=tls.shared_client_context(env, verify=False),
                server_hostname=server.Fqdn,
            )
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"  # tickets come before this answer
            session = writer.get_extra_info("ssl_object").session
            writer.close()
            return bool(session is not None and session.has_ticket)
        finally:
            listener.close()

    assert asyncio.run(main()) is tickets


def test_logins_use_back_end_connections_proved_ahead(env: Home, in_process: Any) -> None:
    """After a first login the front end keeps a proved connection ready: the next login
    takes it (one LOGIN line, same checks at the back end). A back end that went away and
    came back meanwhile costs nothing but a fresh connection."""
    server = store.load(env).settings.Servers["MBX01"]
    configure(env, "IMAP", ProxyTargetPort=server.ImapBackEndPort)
    with in_process(IMAP4, env) as run:
        pool = run.service.proved
        with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndPort) as backend:
            login_and_logout(env)
            assert pool.hits == 0
            run.call(_refilled(pool))
            assert sum(map(len, pool._ready.values())) == 1, "nothing was proved ahead of time"
            login_and_logout(env)
            assert pool.hits == 1
            assert backend.logins == ["bob", "bob"]
            assert all(info.client_address == "127.0.0.1" for info in backend.proxied)
        # The parked connection died with that back end; a new one on the same port serves.
        with FakeBackend(env, "IMAP", server.BackEndAddress, server.ImapBackEndPort) as again:
            login_and_logout(env)
            assert again.logins == ["bob"]


async def _refilled(pool: Any) -> None:
    """In the front end's loop: until the connections being proved ahead are ready."""
    await asyncio.gather(*pool._tasks)
