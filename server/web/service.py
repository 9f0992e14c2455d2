"""W3SVC: the web service (settings page, autoconfig, autodiscover).

Listens on the server's OwaVirtualDirectory.Bindings (HTTP) and SSLBindings (HTTPS, with the
certificate enabled for IIS, made for the FQDN on first start). The listening sockets are
bound here and handed to aiohttp SockSites, reconciled on every reload like
runtime.listeners.ListenerSet: new bindings first, then removed ones stop listening, while
requests already running finish.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from aiohttp import web

from server.directory import Directory
from server.directory.login import LoginGate
from server.runtime import tls
from server.runtime.listeners import bind_socket, endpoint_label
from server.runtime.service import Service
from server.settings.models import Settings
from server.settings.types import IPEndPoint
from server.web.app import build_app
from server.web.session import RevokedSessions, SessionSigner, session_key

Key = tuple[str, int, bool]  # address, port, TLS


def wanted_keys(plain: list[IPEndPoint], secure: list[IPEndPoint]) -> list[Key]:
    keys = [(ep.address, ep.port, False) for ep in plain]
    keys += [(ep.address, ep.port, True) for ep in secure]
    return list(dict.fromkeys(keys))


class WebService(Service):
    directory: Directory
    signer: SessionSigner
    logins: LoginGate

    async def start(self) -> None:
        home = self.ctx.home
        # Directory() hashes a dummy password (argon2): keep it off the event loop.
        self.directory = await asyncio.to_thread(Directory, home)
        directory = self.directory
        self.signer = SessionSigner(
            await asyncio.to_thread(session_key, home),
            password_hash=directory.stored_hash,
            revoked=RevokedSessions(home),
        )
        self.logins = LoginGate(directory)
        self.ssl_context: ssl.SSLContext | None = None
        self.sites: dict[Key, web.SockSite] = {}
        self.sockets: dict[Key, socket.socket] = {}
        self.runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        try:
            await self.apply(self.ctx.settings)
        except BaseException:
            await self.runner.cleanup()
            raise

    async def reload(self, old: Settings, new: Settings) -> None:
        await self.apply(new)

    async def apply(self, settings: Settings) -> None:
        server = settings.server(self.ctx.server)
        vdir = server.OwaVirtualDirectory
        if vdir.SSLBindings:
            await self.refresh_certificate(server.Fqdn)
        wanted = wanted_keys(list(vdir.Bindings), list(vdir.SSLBindings))
        for key in wanted:
            if key not in self.sites:
                await self.open_site(key)
        for key in [k for k in self.sites if k not in wanted]:
            await self.close_site(key)

    async def refresh_certificate(self, fqdn: str) -> None:
        cert = await asyncio.to_thread(tls.ensure_certificate, self.ctx.home, "IIS", fqdn)
        if self.ssl_context is None:
            self.ssl_context = tls.server_context(cert)
        else:
            tls.reload_context(self.ssl_context, cert)

    async def open_site(self, key: Key) -> None:
        address, port, secure = key
        sock = bind_socket(address, port)
        site = web.SockSite(self.runner, sock, ssl_context=self.ssl_context if secure else None)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        self.sites[key], self.sockets[key] = site, sock
        self.ctx.log.info("event=listen endpoint=%s", site.name)

    async def close_site(self, key: Key) -> None:
        site = self.sites.pop(key)
        self.sockets.pop(key, None)
        await site.stop()
        self.ctx.log.info("event=unlisten endpoint=%s", site.name)

    def bound_port(self, address: str, port: int, secure: bool) -> int:
        """The real port of a binding (for port 0 in tests)."""
        return self.sockets[(address, port, secure)].getsockname()[1]

    async def stop(self, grace: float) -> None:
        for key in list(self.sites):
            await self.close_site(key)
        try:
            await asyncio.wait_for(self.runner.cleanup(), timeout=max(grace, 0.1) + 1)
        except TimeoutError:
            self.ctx.log.warning("event=stop_timeout detail=requests still running")

    def status(self) -> dict[str, Any]:
        server = self.runner.server
        return {
            "connections": len(server.connections) if server is not None else 0,
            "endpoints": [endpoint_label(*key) for key in self.sites],
        }
