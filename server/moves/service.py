"""MSExchangeMailboxReplication ("Mailbox Replication Service"): mailbox moves.

Every server runs one. On the TARGET of a move it is the mover: it copies the mailbox into
its own store, pass after pass while the user keeps working, then asks the source to fence
the mailbox, runs the final pass, switches the mailbox's Server in the directory and has the
source delete its copy. On the SOURCE it is the only way the mailbox's contents leave: it
answers the mover's requests (server/moves/wire.py) from its own server's store, raises the
fence (server/moves/fence.py) and ends the mailbox's IMAP and POP3 sessions through the back
ends' control sockets. So each server's store is opened only by that server's services.

The mover's connection is TLS on the source's BackEndAddress:MailboxReplicationPort (the
certificate checked against the organization's CA and the source's Fqdn), then the hand-over
with protocol "MRS" and the mailbox as the LOGIN name: the mover proves it knows the proxy
secret, as front ends and the delivery hop do. docs/architecture.md ("Mailbox moves").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from server.backend.handover import prove_peer
from server.directory import DirectoryUnavailable, Entry, ProxySecret, find_entry, ldap_for
from server.moves import fence, wire
from server.moves.copier import (
    Copier,
    CopyState,
    SourceChanges,
    SourceFolder,
    StoreSource,
    load_state,
    save_state,
)
from server.moves.request import (
    ACTIVE,
    MoveRequest,
    MoveStateError,
    RequestBook,
    percent,
)
from server.protocols import handover, proxyv2
from server.runtime import tls
from server.runtime.backend_port import BackEndPort
from server.runtime.service import Service, ServiceContext
from server.runtime.status import control_request
from server.settings import store as settings_store
from server.settings.models import IMAP4BE, POP3BE, Settings
from server.settings.paths import Home
from server.store.api import MailStore, StoreError
from server.store.usage import mailbox_key

HANDOVER_DEADLINE = 10.0
MAX_UNAUTHENTICATED = 16
IDLE_TIMEOUT = 300.0
# Incremental passes until one applies at most this many changes, then the final pass
# (under the fence, so it should be short); at most MAX_PASSES in all before it.
QUIET_PASS = 16
MAX_PASSES = 6
CONNECT_TIMEOUT = 30.0


def open_default_store(home: Home, server: str) -> MailStore:
    from server.store import open_store

    return open_store(home, server)


class MoveCancelled(Exception):
    """The request was removed while the move ran."""


class ReplicationService(Service):
    store_factory: Callable[[Home, str], MailStore] = staticmethod(open_default_store)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._port = BackEndPort(
            ctx, lambda server: server.MailboxReplicationPort, self._serve, HANDOVER_DEADLINE
        )
        self._store: MailStore | None = None
        self._moves: dict[str, asyncio.Task[Any]] = {}  # mailbox key -> the move running
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self.proxy_secret = ProxySecret(ctx.home)
        self.unauthenticated = 0
        self.book = RequestBook(ctx.home)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._store = await asyncio.to_thread(
            type(self).store_factory, self.ctx.home, self.ctx.server
        )
        try:
            await self._port.reconcile()
        except BaseException:
            await self._close()
            raise
        self._runner = asyncio.create_task(self._run())
        self._wake.set()  # requests queued while the service was down

    async def reload(self, old: Settings, new: Settings) -> None:
        await self._port.reconcile()
        self._wake.set()

    async def reload_certificates(self) -> None:
        await self._port.reconcile()

    async def stop(self, grace: float) -> None:
        self._stopping.set()  # moves stop at their next step and stay InProgress
        if self._runner is not None:
            self._runner.cancel()
        await self._port.stop(grace, also=list(self._moves.values()))
        await self._close()

    async def _close(self) -> None:
        self._port.close()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None

    def status(self) -> dict[str, Any]:
        return {
            "connections": len(self._port.connections),
            "endpoints": self._port.endpoints,
            "moves": sorted(self._moves),
        }

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"op": "wake"}: mailctl made, resumed or removed a move request."""
        if request.get("op") == "wake":
            self._wake.set()
            return {"ok": True}
        return await super().control(request)

    def bound_port(self) -> int:
        return self._port.bound_port()

    # --- the mover (this server is the target) ----------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                requests = await asyncio.to_thread(self.book.all)
                await asyncio.to_thread(self._clean_up, requests)
            except Exception:
                self.ctx.log.exception("service=%s event=scan-failed", self.ctx.name)
                continue
            for request in requests:
                key = mailbox_key(request.Identity)
                if (
                    request.TargetDatabase.lower() == self.ctx.server.lower()
                    and request.Status in ACTIVE
                    and key not in self._moves
                ):
                    task = asyncio.create_task(self._move(request.Identity))
                    self._moves[key] = task
                    task.add_done_callback(lambda _t, k=key: self._moves.pop(k, None))

    async def _move(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.move, name)
        except Exception:
            self.ctx.log.exception("service=%s event=move-crashed mailbox=%r", self.ctx.name, name)

    def _state_path(self, name: str) -> Any:
        return fence.folder(self.ctx.home, self.ctx.server) / f"{mailbox_key(name)}.copy.json"

    def _clean_up(self, requests: list[MoveRequest]) -> None:
        """Copies left on this server by moves that were removed before they switched."""
        folder = fence.folder(self.ctx.home, self.ctx.server)
        if not folder.is_dir() or self._store is None:
            return
        wanted = {
            mailbox_key(r.Identity)
            for r in requests
            if r.TargetDatabase.lower() == self.ctx.server.lower() and not r.Switched
        }
        for path in folder.glob("*.copy.json"):
            key = path.name.removesuffix(".copy.json")
            if key in wanted or key in self._moves:
                continue
            entry = self._entry(key)
            if entry is None or entry.server_name.lower() != self.ctx.server.lower():
                self._store.delete_mailbox(entry.name if entry else key)
            path.unlink(missing_ok=True)

    def _entry(self, name: str) -> Entry | None:
        return find_entry(self.ctx.settings, name, self.ctx.home)

    def move(self, name: str) -> None:
        """Run one move to its end (blocking; a worker thread)."""
        log = self.ctx.log
        me = self.ctx.server
        try:
            request = self.book.update(name, "start", StatusDetail="CopyingMessages")
        except MoveStateError:
            return  # removed, or another status by now
        try:
            entry = self._entry(name)
        except DirectoryUnavailable:
            self._fail(name, "the directory cannot be reached", "TransientException")
            return
        if entry is None:
            self._fail(name, f"there is no mailbox {name}", "MailboxNotFound")
            return
        if request.Switched or entry.server_name.lower() == me.lower():
            # Switched before a restart, or never needed: only the clean-up is left.
            self._finish(request, entry, None)
            return
        source = entry.server_name
        assert self._store is not None
        state_path = self._state_path(name)
        state = load_state(state_path)
        if state is None:
            # A fresh copy: nothing of an earlier attempt is trusted.
            self._store.delete_mailbox(entry.name)
        # Replaces a fence this server kept from when the mailbox moved away from here.
        fence.raise_fence(self.ctx.home, me, entry.name, me, fence.INCOMING)
        target = self._store.mailbox(entry.name)
        log.info("service=%s event=move-start mailbox=%r from=%s", self.ctx.name, name, source)
        try:
            with SourceClient(self.ctx.home, self.ctx.settings, source, entry.name) as client:
                copier = Copier(client, target, state, self._progress(name))
                locked, fenced = False, 0.0
                try:
                    self._passes(name, copier, state_path)
                    current = self.book.get(name)
                    if current is None:
                        raise MoveCancelled
                    if current.SuspendWhenReadyToComplete:
                        self.book.update(name, "ready", StatusDetail="AutoSuspended")
                        log.info("service=%s event=move-ready mailbox=%r", self.ctx.name, name)
                        return
                    self.book.update(name, "lock", StatusDetail="FinalIncrementalSync")
                    fenced = time.monotonic()
                    ended = client.lock(me)
                    locked = True
                    state_path.unlink(missing_ok=True)
                    copier.run_pass()  # nothing of the source can change any more
                    self.book.update(name, StatusDetail="UpdatingDirectory")
                    fence.raise_fence(self.ctx.home, me, entry.name, me, fence.INCOMING)
                    self._switch(entry)
                except BaseException:
                    if locked:
                        with contextlib.suppress(Exception):
                            client.unlock()
                    raise
                request = self.book.update(
                    name,
                    Switched=True,
                    StatusDetail="CleanupSource",
                    TotalFinalizationDuration=round(time.monotonic() - fenced, 3),
                )
                log.info(
                    "service=%s event=move-switched mailbox=%r from=%s sessions_ended=%s",
                    self.ctx.name,
                    name,
                    source,
                    ended,
                )
                self._finish(request, entry, client)
        except MoveCancelled:
            log.info("service=%s event=move-cancelled mailbox=%r", self.ctx.name, name)
            state_path.unlink(missing_ok=True)
            self._store.delete_mailbox(entry.name)
        except _Stopping:
            log.info("service=%s event=move-paused mailbox=%r", self.ctx.name, name)
        except Exception as exc:  # noqa: BLE001 - every failure ends as Failed, with why
            log.warning(
                "service=%s event=move-failed mailbox=%r error=%r",
                self.ctx.name,
                name,
                str(exc),
                exc_info=not isinstance(
                    exc, OSError | StoreError | wire.WireError | handover.HandoverError
                ),
            )
            self._fail(name, str(exc) or type(exc).__name__, type(exc).__name__)

    def _passes(self, name: str, copier: Copier, state_path: Any) -> None:
        """The initial copy, then incremental passes until one is quiet."""
        while True:
            if self._stopping.is_set():
                raise _Stopping
            state_path.unlink(missing_ok=True)  # a pass cut off half-way is not resumable
            applied = copier.run_pass()
            save_state(state_path, copier.state)
            if self.book.get(name) is None:
                raise MoveCancelled
            if copier.state.passes > 1 and (
                applied <= QUIET_PASS or copier.state.passes >= MAX_PASSES
            ):
                return

    def _progress(self, name: str) -> Callable[[CopyState], None]:
        def report(state: CopyState) -> None:
            if self._stopping.is_set():
                raise _Stopping
            totals = state.totals
            try:
                self.book.update(
                    name,
                    ItemsTransferred=state.items,
                    BytesTransferred=state.octets,
                    Passes=state.passes,
                    TotalMailboxItemCount=totals[0],
                    TotalMailboxSize=totals[1],
                    PercentComplete=percent(state.items, totals[0], state.passes),
                )
            except MoveStateError:
                raise MoveCancelled from None

        return report

    def _switch(self, entry: Entry) -> None:
        """The mailbox's Server in the directory becomes this server."""
        settings = settings_store.load(self.ctx.home).settings
        ldap = ldap_for(settings, self.ctx.home)
        if ldap is None:
            with settings_store.edit(self.ctx.home) as session:
                session.set(("Mailboxes", entry.name, "Server"), self.ctx.server)
            return
        found = ldap.find(entry.name, next(iter(settings.Servers)))
        if found is None:
            raise ValueError(f"mailbox {entry.name} is no longer in the directory")
        ldap.update(found, found.mailbox.model_copy(update={"Server": self.ctx.server}))

    def _finish(self, request: MoveRequest, entry: Entry, client: SourceClient | None) -> None:
        """After the switch: the source deletes its copy; then the request is Completed."""
        name = request.Identity
        try:
            if client is None:
                with SourceClient(
                    self.ctx.home, self.ctx.settings, request.SourceDatabase, entry.name
                ) as again:
                    again.purge(self.ctx.server)
            else:
                client.purge(self.ctx.server)
        except (OSError, wire.WireError, handover.HandoverError) as exc:
            self.book.update(
                name,
                "warn",
                StatusDetail="CompletedWithWarning",
                Message=f"the copy on {request.SourceDatabase} was not deleted: {exc}",
            )
            return
        finally:
            self._state_path(name).unlink(missing_ok=True)
        self.book.update(name, "complete", StatusDetail="Completed", Message="")
        self.ctx.log.info("service=%s event=move-completed mailbox=%r", self.ctx.name, name)

    def _fail(self, name: str, message: str, kind: str) -> None:
        with contextlib.suppress(MoveStateError):
            self.book.update(name, "fail", StatusDetail="Failed", Message=message, FailureType=kind)

    # --- the source side --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One mover's connection (BackEndPort tracks it and closes the writer)."""
        try:
            shake = await prove_peer(
                self, reader, writer, wire.PROTOCOL, HANDOVER_DEADLINE, MAX_UNAUTHENTICATED
            )
            if shake is None:
                return
            assert shake.accepted is not None
            wanted = shake.accepted.mailbox
            try:
                entry = await asyncio.to_thread(self._entry, wanted)
            except DirectoryUnavailable:
                entry = None
            if entry is None or entry.server_name.lower() != self.ctx.server.lower():
                writer.write(shake.refuse(f"mailbox {wanted} is not on {self.ctx.server}"))
                await writer.drain()
                return
            writer.write(shake.ok())
            assert self._store is not None
            source = StoreSource(self._store.mailbox(entry.name))
            self.ctx.log.info(
                "service=%s event=move-source-open mailbox=%r", self.ctx.name, entry.name
            )
            while True:
                line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                if not line:
                    return
                try:
                    answer, payload = await self._answer(entry.name, source, wire.decode(line))
                except (StoreError, wire.WireError, KeyError, ValueError, TypeError) as exc:
                    answer, payload = {"ok": False, "error": str(exc)}, b""
                writer.write(wire.encode(answer))
                if payload:
                    writer.write(payload)
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError, ValueError):
            pass

    async def _answer(
        self, name: str, source: StoreSource, request: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        op = request.get("op")
        home, me = self.ctx.home, self.ctx.server
        if op == "folders":
            folders = await asyncio.to_thread(source.folders)
            return {"ok": True, "folders": [wire.folder_to_json(f) for f in folders]}, b""
        if op == "changes":
            changes = await asyncio.to_thread(
                source.changes, str(request["folder"]), int(request["modseq"])
            )
            return {"ok": True, **wire.changes_to_json(changes)}, b""
        if op == "read":
            uids = [int(u) for u in request["uids"]][: wire.MAX_UIDS_PER_READ]
            bodies = await asyncio.to_thread(source.read, str(request["folder"]), uids)
            payload = b"".join(bodies.values())
            sizes = [[uid, len(body)] for uid, body in bodies.items()]
            return {"ok": True, "sizes": sizes, "octets": len(payload)}, payload
        if op == "lock":
            target = str(request["target"])
            await asyncio.to_thread(fence.raise_fence, home, me, name, target)
            ended = await self._end_sessions(name, target)
            return {"ok": True, "ended": ended}, b""
        if op == "unlock":
            await asyncio.to_thread(fence.lower_fence, home, me, name)
            return {"ok": True}, b""
        if op == "purge":
            target = str(request["target"])
            assert self._store is not None
            await asyncio.to_thread(self._store.delete_mailbox, name)
            await asyncio.to_thread(fence.raise_fence, home, me, name, target, fence.MOVED)
            self.ctx.log.info(
                "service=%s event=move-source-deleted mailbox=%r to=%s", self.ctx.name, name, target
            )
            return {"ok": True}, b""
        raise wire.WireError(f"unknown request {op!r}")

    async def _end_sessions(self, name: str, target: str) -> int:
        """End the mailbox's sessions in this server's IMAP4 and POP3 back ends; a back end
        that is not running has none."""
        request = {
            "op": "end-sessions",
            "mailbox": name,
            "text": f"[UNAVAILABLE] Mailbox moved to server {target}; reconnect",
        }
        ended = 0
        for service in (IMAP4BE, POP3BE):
            answer = await asyncio.to_thread(
                control_request, self.ctx.home, service, self.ctx.server, request, 60.0
            )
            if answer is not None:
                ended += int(answer.get("ended", 0))
        return ended


class _Stopping(Exception):
    """The service is stopping: the move stays InProgress and goes on at the next start."""


class SourceClient:
    """The mover's connection to the source server's replication service (blocking): a
    SourceReader for the copier, plus the fence and the clean-up."""

    def __init__(self, home: Home, settings: Settings, server: str, mailbox: str) -> None:
        self.home, self.settings, self.server, self.mailbox = home, settings, server, mailbox
        self.sock: ssl.SSLSocket | None = None
        self.file: BinaryIO | None = None

    def __enter__(self) -> SourceClient:
        source = self.settings.server(self.server)
        secret = ProxySecret(self.home)
        key = secret.cached() or secret.load()
        raw = socket.create_connection(
            (source.BackEndAddress, source.MailboxReplicationPort), timeout=CONNECT_TIMEOUT
        )
        try:
            context = tls.shared_client_context(self.home, verify=True)
            sock = context.wrap_socket(raw, server_hostname=source.Fqdn)
        except BaseException:
            raw.close()
            raise
        try:
            file = sock.makefile("rb")
            local, remote = sock.getsockname(), sock.getpeername()
            header = proxyv2.encode(
                proxyv2.ProxyInfo(str(local[0]), int(local[1]), str(remote[0]), int(remote[1]))
            )
            shake = handover.FrontendHandshake(
                key, wire.PROTOCOL, self.server, self.mailbox, header
            )
            while not shake.done:
                line = file.readline(handover.MAX_LINE + 1)
                if not line:
                    raise wire.WireError(f"{self.server} closed the hand-over")
                answer = shake.on_line(line)
                if answer:
                    sock.sendall(answer)
        except BaseException:
            sock.close()
            raise
        self.sock, self.file = sock, file
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        assert self.sock is not None and self.file is not None
        self.sock.sendall(wire.encode(request))
        line = self.file.readline()
        if not line:
            raise wire.WireError(f"{self.server} closed the connection")
        answer = wire.decode(line)
        if not answer.get("ok"):
            raise wire.WireError(f"{self.server}: {answer.get('error')}")
        octets = int(answer.get("octets") or 0)
        payload = self.file.read(octets) if octets else b""
        if len(payload) != octets:
            raise wire.WireError(f"{self.server} closed the connection")
        return answer, payload

    def folders(self) -> list[SourceFolder]:
        answer, _ = self._ask({"op": "folders"})
        return [wire.folder_from_json(f) for f in answer["folders"]]

    def changes(self, folder: str, modseq: int) -> SourceChanges:
        answer, _ = self._ask({"op": "changes", "folder": folder, "modseq": modseq})
        return wire.changes_from_json(answer)

    def read(self, folder: str, uids: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for at in range(0, len(uids), wire.MAX_UIDS_PER_READ):
            part = uids[at : at + wire.MAX_UIDS_PER_READ]
            answer, payload = self._ask({"op": "read", "folder": folder, "uids": part})
            offset = 0
            for uid, size in answer["sizes"]:
                out[int(uid)] = payload[offset : offset + int(size)]
                offset += int(size)
        return out

    def lock(self, target: str) -> int:
        answer, _ = self._ask({"op": "lock", "target": target})
        return int(answer.get("ended", 0))

    def unlock(self) -> None:
        self._ask({"op": "unlock"})

    def purge(self, target: str) -> None:
        self._ask({"op": "purge", "target": target})


__all__ = ["ReplicationService", "SourceClient", "open_default_store"]
