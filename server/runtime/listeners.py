"""A service's listening sockets, reconciled with the settings on every reload.

New bindings are bound before removed ones are closed, so a reload never leaves a moment
with no listener; connections already accepted are not touched when their listener closes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

from server.settings.types import IPEndPoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Key = tuple[str, int, bool]  # address, port, implicit TLS

# Set by the runtime when the service runs several processes (server/runtime/workers.py).
# Off otherwise: without SO_REUSEPORT a second copy of a service started by mistake fails
# to bind, instead of silently taking half of the connections.
_reuse_port = False


def set_reuse_port(on: bool) -> None:
    """Bind every later listener of this process with SO_REUSEPORT (one service per process)."""
    global _reuse_port
    _reuse_port = on


def bind_socket(address: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on address:port, for every service's listeners.

    Bound here rather than by asyncio so that a failure names the endpoint.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if _reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        # [::] and 0.0.0.0 are separate bindings in Exchange; keep them so.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def endpoint_label(address: str, port: int, tls: bool = False) -> str:
    """How status output names a listener: IPv6 addresses bracketed, "(SSL)" for implicit TLS."""
    return f"{'[' + address + ']' if ':' in address else address}:{port}{' (SSL)' if tls else ''}"


class ListenerSet:
    def __init__(
        self,
        handler_for: Callable[[bool], Handler],
        limit: int = 2**16,
        handshake_timeout: float = 30.0,
    ) -> None:
        """`handler_for(implicit_tls)` gives the connection handler of a listener kind;
        `handshake_timeout` bounds a TLS handshake (before the handler runs)."""
        self._handler_for = handler_for
        self._servers: dict[Key, asyncio.Server] = {}
        self._limit = limit
        self._handshake_timeout = handshake_timeout

    @property
    def endpoints(self) -> list[str]:
        return [endpoint_label(a, p, tls) for (a, p, tls) in self._servers]

    def bound_port(self, address: str, port: int, tls: bool) -> int:
        """The real port (for port 0 in tests)."""
        server = self._servers[(address, port, tls)]
        return server.sockets[0].getsockname()[1]

    async def reconcile(
        self,
        plain: list[IPEndPoint],
        implicit_tls: list[IPEndPoint],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        wanted: dict[Key, ssl.SSLContext | None] = {}
        for ep in plain:
            wanted[(ep.address, ep.port, False)] = None
        for ep in implicit_tls:
            wanted[(ep.address, ep.port, True)] = ssl_context
        for key, ctx in wanted.items():
            if key not in self._servers:
                self._servers[key] = await self._bind(key, ctx)
        for key in [k for k in self._servers if k not in wanted]:
            self._servers.pop(key).close()

    async def _bind(self, key: Key, ctx: ssl.SSLContext | None) -> asyncio.Server:
        address, port, tls = key
        return await asyncio.start_server(
            self._handler_for(tls),
            sock=bind_socket(address, port),
            ssl=ctx if tls else None,
            limit=self._limit,
            ssl_handshake_timeout=self._handshake_timeout if tls else None,
        )

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
