"""Helpers for the front-end and submission end-to-end tests: a fake back end that checks
the hand-over contract, settings helpers, and a port finder that tolerates TIME_WAIT."""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import threading
import zlib
from pathlib import Path
from typing import Any

from server.directory import Directory, proxy_secret
from server.protocols import handover, proxyv2
from server.runtime import tls
from server.settings import store
from server.settings.models import Mailbox, Settings, default_settings
from server.settings.paths import Home
from server.settings.types import MailboxType
from tests.conftest import free_port_plan  # noqa: F401 - re-exported for the front-end tests

PASSWORD = "Pa55word!"


def make_home(path: Path) -> Home:
    home = Home.resolve(path)
    store.create(home, default_settings(ports=free_port_plan()))
    return home


# --------------------------------------------------------------------------- fake back end


class FakeBackend:
    """IMAP or POP3 back end that speaks just enough: the back end's side of the hand-over
    (server/protocols/handover.py, so the front end's proof and the PROXY header are checked),
    then WHOAMI (IMAP, an X command) / STAT (POP3), BIG n, DIE, LOGOUT/QUIT."""

    def __init__(
        self,
        home: Home,
        protocol: str,
        host: str,
        port: int,
        context: ssl.SSLContext | None = None,
        server: str | None = None,
    ) -> None:
        self.home, self.protocol, self.host, self.port = home, protocol, host, port
        # Which server's back end this is: the one whose BackEndAddress is `host`.
        servers = store.load(home).settings.Servers
        self.server_name = server or next(
            (name for name, srv in servers.items() if srv.BackEndAddress == host), "MBX01"
        )
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.proxied: list[proxyv2.ProxyInfo] = []
        self.logins: list[str] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    def __enter__(self) -> FakeBackend:
        self.thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(
            self.handle, self.host, self.port, ssl=self.context, reuse_address=True
        )

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()

    def kill_sessions(self) -> None:
        async def kill() -> None:
            for writer in list(self.writers):
                writer.transport.abort()

        self._call(kill())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            protocol = "IMAP4" if self.protocol == "IMAP" else "POP3"
            shake = handover.BackendHandshake(
                proxy_secret(self.home).encode(), protocol, self.server_name
            )
            writer.write(shake.challenge())
            while shake.accepted is None:
                data = await reader.read(shake.room())
                if not data:
                    return
                writer.write(shake.receive(data))
            info = shake.accepted.client
            assert info is not None
            self.proxied.append(info)
            self.logins.append(shake.accepted.mailbox)
            writer.write(shake.ok())
            if self.protocol == "IMAP":
                await self.imap(reader, writer, info, shake.accepted.mailbox)
            else:
                await self.pop(reader, writer, info, shake.accepted.mailbox)
        except (handover.HandoverError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def imap(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: proxyv2.ProxyInfo,
        user: str,
    ) -> None:
        writer.write(b"* PREAUTH [CAPABILITY IMAP4rev1 IDLE XFAKE] proxied\r\n")
        while line := await reader.readline():
            tag, _, rest = line.strip().partition(b" ")
            verb, _, arg = rest.partition(b" ")
            verb = verb.upper()
            if verb == b"WHOAMI":
                writer.write(f"* WHOAMI {user} {info.client_address}\r\n".encode())
                writer.write(tag + b" OK done\r\n")
            elif verb == b"BIG":
                n = int(arg)
                writer.write(b"* BIG {%d}\r\n" % n + b"x" * n + b"\r\n" + tag + b" OK big\r\n")
            elif verb == b"DIE":
                writer.transport.abort()
                return
            elif verb == b"LOGOUT":
                writer.write(b"* BYE bye\r\n" + tag + b" OK LOGOUT completed\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" OK " + verb + b" done\r\n")
            await writer.drain()

    async def pop(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: proxyv2.ProxyInfo,
        user: str,
    ) -> None:
        writer.write(b"+OK proxied\r\n")
        while line := await reader.readline():
            verb = line.strip().upper()
            if verb == b"STAT":
                writer.write(f"+OK {len(user)} 0\r\n".encode())
            elif verb == b"DIE":
                writer.transport.abort()
                return
            elif verb == b"QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"-ERR unknown\r\n")
            await writer.drain()


# --------------------------------------------------------------------------- set-up helpers


def save(home: Home, settings: Settings) -> None:
    data = settings.model_dump(mode="json")
    with store.edit(home) as edit:
        for key, value in data.items():
            edit.set((key,), value)


def add_mailboxes(home: Home) -> None:
    settings = store.load(home).settings
    domain = settings.Organization.Domain
    boxes = {
        "bob": {},
        "alice": {},
        "Administrator": {"Type": MailboxType.Administrator},
        "guest": {"Type": MailboxType.Guest},
        "anon": {"Type": MailboxType.Anonymous},
        "carol": {"ImapEnabled": False, "PopEnabled": False},
    }
    for name, extra in boxes.items():
        settings.Mailboxes[name] = Mailbox(
            PrimarySmtpAddress=f"{name.lower()}@{domain}", Server="MBX01", **extra
        )
    save(home, settings)
    directory = Directory(home)
    for name in boxes:
        directory.set_password(name, PASSWORD)


def configure(home: Home, protocol: str, **changes: Any) -> None:
    settings = store.load(home).settings
    server = settings.Servers["MBX01"]
    target = server.ImapSettings if protocol == "IMAP" else server.PopSettings
    for key, value in changes.items():
        setattr(target, key, value)
    save(home, settings)


def client_context(home: Home) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ensure_ca(home)))


def ports(home: Home, protocol: str) -> tuple[int, int]:
    server = store.load(home).settings.Servers["MBX01"]
    ps = server.ImapSettings if protocol == "IMAP" else server.PopSettings
    return ps.UnencryptedOrTLSBindings[0].port, ps.SSLBindings[0].port


def bypass_validation(svc: Any, protocol: str, **changes: Any) -> None:
    """Values below the settings' allowed range (e.g. a 0.5 s timeout), for fast tests."""
    settings = svc.service.ctx.settings
    server = settings.Servers["MBX01"]
    field = "ImapSettings" if protocol == "IMAP" else "PopSettings"
    new_ps = getattr(server, field).model_copy(update=changes)
    new_server = server.model_copy(update={field: new_ps})
    svc.service.ctx.settings = settings.model_copy(
        update={"Servers": {**settings.Servers, "MBX01": new_server}}
    )


class Deflated:
    """An IMAP connection after COMPRESS DEFLATE (RFC 4978), for the front-end tests.
    Raw deflate both ways; each write ends with a sync flush, else the server could wait
    forever for the rest of a block."""

    def __init__(self, sock: socket.socket, reader: io.BufferedReader) -> None:
        self.sock, self.reader = sock, reader
        sock.sendall(b"b COMPRESS DEFLATE\r\n")
        assert reader.readline() == b"b OK DEFLATE active\r\n"  # the OK itself in clear
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)

    def send(self, data: bytes) -> None:
        self.sock.sendall(self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def read_until(self, marker: bytes) -> bytes:
        """The inflated replies up to `marker`; the connection ending first fails the test."""
        out = b""
        while marker not in out:
            chunk = self.reader.read1(65536)
            assert chunk, out
            out += self._inflate.decompress(chunk)
        return out

    def read_to_end(self) -> bytes:
        out = b""
        while chunk := self.reader.read1(65536):
            out += self._inflate.decompress(chunk)
        return out
