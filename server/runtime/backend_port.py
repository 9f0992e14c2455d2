"""One implicit-TLS port on the server's BackEndAddress, for a service that only the
organization's own services connect to (MSExchangeDelivery, MSExchangeMailboxReplication).

The listener presents the server's own certificate (issued by the organization's CA) and
follows the settings and the certificates on every reload; the connections it accepted are
tracked, so that stopping can give them a grace period and the status can count them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from server.runtime import tls
from server.runtime.listeners import Handler, ListenerSet
from server.runtime.service import ServiceContext
from server.settings.models import Server
from server.settings.types import IPEndPoint

CERTIFICATE = "SMTP"  # the one enabled for SMTP, as Exchange's transport uses for its hops


class BackEndPort:
    def __init__(
        self,
        ctx: ServiceContext,
        port_of: Callable[[Server], int],
        handler: Handler,
        handshake_timeout: float,
    ) -> None:
        """`port_of(server)` is the port setting (read again on every reconcile);
        `handshake_timeout` bounds the TLS handshake, before `handler` runs."""
        self._ctx = ctx
        self._port_of = port_of
        self._handler = handler
        self._listeners = ListenerSet(lambda _tls: self._serve, handshake_timeout=handshake_timeout)
        self._tls = tls.LiveContext(session_tickets=False)  # services connect, never clients
        self.connections: set[asyncio.Task[Any]] = set()

    def _endpoint(self) -> IPEndPoint:
        server = self._ctx.server_settings
        return IPEndPoint(server.BackEndAddress, self._port_of(server))

    async def reconcile(self) -> None:
        """Bind (or move) the listener as the settings say, with the certificate in force."""
        ctx = self._ctx
        cert = await asyncio.to_thread(
            tls.ensure_certificate, ctx.home, CERTIFICATE, ctx.server_settings.Fqdn
        )
        context = self._tls.use(cert)
        await self._listeners.reconcile([], [self._endpoint()], context)

    def close(self) -> None:
        """Stop accepting; the connections already accepted go on."""
        self._listeners.close()

    async def stop(self, grace: float, also: Iterable[asyncio.Task[Any]] = ()) -> None:
        """Stop accepting, wait up to `grace` seconds for the connections (and `also`, the
        service's other work) to end, then cancel what is left."""
        self.close()
        running = [*also, *self.connections]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()

    @property
    def endpoints(self) -> list[str]:
        return self._listeners.endpoints

    def bound_port(self) -> int:
        """The real port (for port 0 in tests)."""
        endpoint = self._endpoint()
        return self._listeners.bound_port(endpoint.address, endpoint.port, True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self._handler(reader, writer)
        finally:
            self.connections.discard(task)
            writer.close()
