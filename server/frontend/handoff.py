"""The front end's side of the hand-off channel (server/protocols/handoff.py): a session
logged in here is given to the back end of this host over one long-lived channel, instead
of a back-end connection of its own.

Used when the mailbox lives on this front end's own server. A plaintext client's socket
goes to the back end as a file descriptor and the front end leaves the data path. A TLS
client's cannot follow (its TLS state lives in this process): the back end gets one end of
a socket pair, and the front end relays between the client's TLS and the other end
(server/frontend/relay.py, COMPRESS included), still without the TCP connection, TLS hop and round trips of a
relayed hand-over. Mailboxes on other servers are relayed as before; MAILCTL_HANDOFF=off
relays everything.

The channel's set-up is the hand-over's mutual proof of the proxy secret, made once; each
login then costs one LOGIN record and its answer, and one TAKE record that carries the
socket. For a plaintext session the connection counts (MaxConnections,
MaxConnectionFromSingleIP, MaxConnectionsPerUser) hold until the back end says END, or
until the channel is lost (the back end stopped: its sessions end with it).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from server.frontend.relay import take_buffered
from server.protocols import handoff, handover, proxyv2
from server.runtime import records
from server.runtime.workers import handoff_address, route

if TYPE_CHECKING:
    from server.directory import Entry
    from server.frontend.core import LoginRequest, Session

SETUP_TIMEOUT = 15.0  # as BACKEND_TIMEOUT: a slower back end counts as down


def enabled() -> bool:
    return os.environ.get("MAILCTL_HANDOFF", "on").lower() not in ("off", "0", "no")


class ChannelLost(Exception):
    """The channel closed before the back end answered."""


class _Channel:
    def __init__(self, sock: socket.socket, codec: handoff.FrontendChannel) -> None:
        self.codec = codec
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting: dict[int, asyncio.Future[tuple[str, bytes]]] = {}
        self.ends: dict[int, Callable[[], None]] = {}
        self.records = records.Records(sock, handoff.MAX_RECORD, self._on_record, self._closed)

    def _on_record(self, data: bytes, fds: list[int]) -> None:
        records.close_fds(fds)  # a back end never sends descriptors
        try:
            if not self.codec.ready:
                answer = self.codec.on_setup(data)
                if answer:
                    self.records.send(answer)
                if self.codec.ready and not self.ready.done():
                    self.ready.set_result(None)
                return
            kind, seq, payload = self.codec.answer(data)
        except handover.HandoverError as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            self.records.close()
            return
        if kind == "end":
            ended = self.ends.pop(seq, None)
            if ended is not None:
                ended()
            return
        waiter = self.waiting.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((kind, payload))
        elif kind == "ok":
            self.drop(seq)  # nobody waits for it any more (the login timed out)

    def _closed(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(ChannelLost("the back end closed the hand-off channel"))
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(ChannelLost("the back end closed the hand-off channel"))
        self.waiting.clear()
        ends, self.ends = self.ends, {}
        for ended in ends.values():
            ended()

    async def login(self, mailbox: str, proxy: bytes) -> tuple[int, str, bytes]:
        seq, record = self.codec.login(mailbox, proxy)
        waiter: asyncio.Future[tuple[str, bytes]] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = waiter
        self.records.send(record)
        try:
            kind, payload = await waiter
        finally:
            self.waiting.pop(seq, None)
        return seq, kind, payload

    def take(self, seq: int, fd: int, read_ahead: bytes, ended: Callable[[], None]) -> None:
        self.ends[seq] = ended
        self.records.send(self.codec.take(seq, read_ahead), [fd])
        if self.records.closed:
            self.ends.pop(seq, None)
            raise ChannelLost("the back end closed the hand-off channel")

    def drop(self, seq: int) -> None:
        self.records.send(self.codec.drop(seq))


class _Process:
    """The channel to one process of the back end."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel: _Channel | None = None
        self.secret = b""
        self.lock = asyncio.Lock()

    def usable(self, secret: bytes) -> _Channel | None:
        channel = self.channel
        if channel is not None and not channel.records.closed and self.secret == secret:
            return channel
        return None


class HandoffClient:
    """The channels to the processes of one back-end service of this host, each made on
    first use and again after it is lost or the proxy secret changes.

    A back end may run several processes (BackEndWorkerProcesses, server/runtime/workers.py),
    each with its own channel; each says at set-up how many there are. A mailbox's sessions
    go to the process route() picks for it, so they share its caches and IDLE wake-ups; while
    that process is not there (restarting), to the service process, which serves any
    mailbox."""

    def __init__(self, home: Any, backend_name: str, protocol: str, server: str) -> None:
        self.home, self.backend_name = home, backend_name
        self.protocol, self.server = protocol, server
        self.count: int | None = None  # the back end's processes, as its latest channel said
        self._processes: dict[int, _Process] = {}

    def _process(self, index: int) -> _Process:
        process = self._processes.get(index)
        if process is None:
            address = handoff_address(self.home, self.backend_name, self.server, index)
            process = self._processes[index] = _Process(address)
        return process

    async def channel(self, secret: bytes, mailbox: str = "") -> _Channel:
        if self.count is None:  # the service process's channel says how many there are
            first = await self._channel(self._process(0), secret)
            if self.count == 1:
                return first
        index = route(mailbox, self.count or 1)
        if index:
            try:
                return await self._channel(self._process(index), secret)
            except (OSError, TimeoutError, ChannelLost, handover.HandoverError):
                pass  # that process is not there now: the service process serves any mailbox
        return await self._channel(self._process(0), secret)

    async def _channel(self, process: _Process, secret: bytes) -> _Channel:
        channel = process.usable(secret)
        if channel is not None:
            return channel
        async with process.lock:
            channel = process.usable(secret)
            if channel is not None:
                return channel
            sock = await records.connect(process.address)
            if records.peer_uid(sock) != os.getuid():
                sock.close()  # not our own back end: it gets not even a nonce
                raise handover.ImpostorError("the hand-off socket belongs to another user")
            channel = _Channel(sock, handoff.FrontendChannel(secret, self.protocol, self.server))
            try:
                await asyncio.wait_for(asyncio.shield(channel.ready), SETUP_TIMEOUT)
            except BaseException:
                channel.records.close()
                raise
            assert channel.codec.workers is not None
            self.count = channel.codec.workers[1]
            process.channel, process.secret = channel, secret
            return channel

    def close(self) -> None:
        for process in self._processes.values():
            if process.channel is not None:
                process.channel.records.close()
                process.channel = None


async def hand_off(
    session: Session, entry: Entry, request: LoginRequest, started: float
) -> bool | None:
    """Give a logged-in client to the back end of this host. True: the session is over here
    (handed off, relayed to its end, or the client went away); False: the back end refused
    the mailbox (the client was told, the session goes on); None: no hand-off now, relay
    over the back-end port instead.

    A plaintext client's own socket goes to the back end. A TLS client's cannot (its TLS
    state is in this process): the back end gets one end of a socket pair instead, and the
    front end relays between the client's TLS and the other end. That still saves the
    relayed hand-over's TCP connection, TLS hop and round trips per session."""
    from server.frontend.core import BackendDone, BackendError, BackendSend, Refusal

    service = session.service
    client = service.handoff
    writer = session.writer
    # A socket stream's transport reads as well: pause_reading/resume_reading exist.
    transport = cast(asyncio.Transport, writer.transport)
    if client is None or transport.is_closing():
        return None
    direct = not session.tls_active
    sock = transport.get_extra_info("socket") if direct else None
    if direct and sock is None:
        return None
    read_ahead = b""
    if direct:
        # From here on the client's bytes stay in the kernel for whoever serves the session.
        transport.pause_reading()
        read_ahead = session.core.leftover() + take_buffered(session.reader)

    def restore() -> None:
        if read_ahead:
            session.core.receive(read_ahead)
        if not transport.is_closing():
            transport.resume_reading()

    if len(read_ahead) > handoff.MAX_AHEAD:
        restore()
        return None
    local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
    header = proxyv2.encode(
        proxyv2.ProxyInfo(str(session.peer[0]), int(session.peer[1]), str(local[0]), int(local[1]))
    )
    try:
        secret = service.proxy_secret.cached() or await asyncio.to_thread(service.proxy_secret.load)
        channel = await client.channel(secret, entry.name)
        async with asyncio.timeout(SETUP_TIMEOUT):  # no task per login, as wait_for makes
            seq, kind, payload = await channel.login(entry.name, header)
    except (OSError, TimeoutError, ChannelLost, handover.HandoverError) as exc:
        session._log("handoff-unavailable", entry.name, repr(exc))
        restore()
        return None
    if kind == "no":
        restore()
        text = payload.decode("utf-8", "replace")
        service.limits.logout(entry.name)
        session.user = None
        session._log("backend-refused", entry.name, f"{entry.server_name}: {text}")
        await session._answer(
            session.core.refuse(request, Refusal.BACKEND_REFUSED, text),
            entry.name,
            started,
            f"Msg={Refusal.BACKEND_REFUSED.value} ({entry.server_name})",
        )
        return False
    capabilities: str | None = None
    conversation = service.backend_login()
    try:
        for line in payload.splitlines(keepends=True):
            step = conversation.on_line(line)
            if isinstance(step, BackendSend):
                raise BackendError("the back end wants more than its greeting")
            if isinstance(step, BackendDone):
                capabilities = step.capabilities
                break
        else:
            raise BackendError("no greeting from the back end")
    except BackendError as exc:
        channel.drop(seq)
        session._log("handoff-unavailable", entry.name, repr(exc))
        restore()
        return None
    accepted = session.core.accept(request, capabilities)
    if direct:
        return await _give_socket(session, entry, channel, seq, accepted, read_ahead, started)
    return await _relay_pair(session, entry, channel, seq, accepted, started)


async def _give_socket(
    session: Session,
    entry: Entry,
    channel: _Channel,
    seq: int,
    accepted: bytes,
    read_ahead: bytes,
    started: float,
) -> bool:
    service, writer = session.service, session.writer
    # A socket stream's transport reads as well: pause_reading/resume_reading exist.
    transport = cast(asyncio.Transport, writer.transport)
    writer.write(accepted)
    if transport.get_write_buffer_size():
        # The answer must be in the kernel before the socket changes hands.
        transport.set_write_buffer_limits(0)
        await writer.drain()
    sock = transport.get_extra_info("socket")
    if transport.is_closing() or sock is None:
        channel.drop(seq)
        return True
    name, ip = entry.name, session.ip
    limits = service.limits

    def ended() -> None:
        limits.logout(name)
        limits.close(ip)

    try:
        channel.take(seq, sock.fileno(), read_ahead, ended)
    except ChannelLost:
        return True  # the back end is gone: so is the session (run()'s end logs it out)
    session.user = None
    session.handed_off = True
    session._log("login", name, f"server={entry.server_name} handoff")
    session._log_answer(accepted, name, started, f"Proxy={entry.server_name}")
    if service.protocol_log.enabled:
        session._log_line(
            "proxy",
            f"{entry.server_name} handoff",
            name,
            started,
            len(read_ahead),
            0,
            "R=OK;ClosedBy=handoff",
        )
    transport.abort()  # this process's descriptor only: the connection is the back end's
    return True


async def _relay_pair(
    session: Session, entry: Entry, channel: _Channel, seq: int, accepted: bytes, started: float
) -> bool:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.take(seq, theirs.fileno(), b"", lambda: None)  # counted here, as relayed
    except ChannelLost:
        mine.close()
        return True
    finally:
        theirs.close()
    backend_reader, backend_writer = await asyncio.open_connection(sock=mine)
    session._backend_writer = backend_writer
    session._log("login", entry.name, f"server={entry.server_name} pair")
    session.writer.write(accepted)
    session._log_answer(accepted, entry.name, started, f"Proxy={entry.server_name}")
    session.relaying = True
    pending = session.core.leftover() + take_buffered(session.reader)
    # COMPRESS stays the front end's here, as on any relayed session.
    await session._relay(entry, pending, backend_reader, backend_writer)
    return True


__all__ = ["ChannelLost", "HandoffClient", "enabled", "hand_off"]
