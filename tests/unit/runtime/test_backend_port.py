"""BackEndPort, the one TLS port of MSExchangeDelivery and MSExchangeMailboxReplication: the
server's certificate on BackEndAddress, the connections it tracks, and stop's grace period."""

from __future__ import annotations

import asyncio
import ssl

from server.runtime import tls
from server.runtime.backend_port import BackEndPort
from server.runtime.service import ServiceContext
from server.settings import store
from server.settings.models import DELIVERY
from server.settings.paths import Home


def context(home: Home) -> ServiceContext:
    snap = store.load(home)
    return ServiceContext(DELIVERY, "MBX01", home, snap.settings, snap.version)


async def connect(
    home: Home, port: BackEndPort
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that checks the certificate against the organization's CA and the Fqdn."""
    server = store.load(home).settings.server("MBX01")
    client = ssl.create_default_context(cafile=str(tls.ensure_ca(home)))
    return await asyncio.open_connection(
        server.BackEndAddress, port.bound_port(), ssl=client, server_hostname=server.Fqdn
    )


def test_connections_are_tracked_and_closed_after_the_handler(home: Home) -> None:
    async def scenario() -> None:
        entered, leave = asyncio.Event(), asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            entered.set()
            await leave.wait()
            writer.write(b"bye\r\n")

        port = BackEndPort(context(home), lambda server: 0, handler, handshake_timeout=10)
        await port.reconcile()
        try:
            assert port.endpoints == ["127.0.0.1:0 (SSL)"]
            reader, writer = await connect(home, port)
            await asyncio.wait_for(entered.wait(), 10)
            assert len(port.connections) == 1
            leave.set()
            assert await asyncio.wait_for(reader.read(), 10) == b"bye\r\n"  # then EOF
            assert port.connections == set()
            writer.close()
        finally:
            port.close()

    asyncio.run(scenario())


def test_stop_waits_out_the_grace_then_cancels(home: Home) -> None:
    async def scenario() -> None:
        entered, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()  # a peer that never finishes
            except asyncio.CancelledError:
                cancelled.set()
                raise

        other_done = asyncio.Event()

        async def other_work() -> None:
            await asyncio.sleep(0)
            other_done.set()

        port = BackEndPort(context(home), lambda server: 0, handler, handshake_timeout=10)
        await port.reconcile()
        reader, writer = await connect(home, port)
        await asyncio.wait_for(entered.wait(), 10)
        await port.stop(0.05, also=[asyncio.create_task(other_work())])
        assert other_done.is_set()  # waited for with the connections
        await asyncio.wait_for(cancelled.wait(), 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the writer was closed
        assert port.endpoints == []
        writer.close()

    asyncio.run(scenario())
