"""MSExchangeIMAP4BE: the IMAP back end, running the sans-IO session over the store.

It accepts only front ends: a connection starts with the hand-over (server/protocols/
handover.py, run by BackendService.hand_over), in which the front end proves it knows the
proxy secret and names the mailbox and the real client. Only then does IMAP begin, already
authenticated: a PREAUTH greeting (RFC 3501 section 7.1.4), so not one IMAP byte from an
unproved peer is ever parsed.

Per connection: the session, one lazily re-armed timer
(autologout and IDLE keep-alives); the store wakes the process once per mailbox
(server/backend/imap/wakeups.py) and the IDLE sessions it woke get their updates from one
task, in place, without a task each (ImapBackendService._push_woken). A handed-off client's
commands are answered in its socket's data callback, a relayed one's by a coroutine reading
its StreamReader (server/backend/imap/connection.py). Commands of a connection run
one at a time in order; those that write to the store run on a shared thread pool, so a
slow disk or a big APPEND never stalls the event loop or the other sessions. Read-only
FETCHes run in place unless one of them turned out slow (see INLINE_SLOW).

With ProtocolLogEnabled each command gets one protocol-log line when its tagged status goes
out (IDLE when DONE ends it), the client address taken from the PROXY header.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import resource
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from server.backend import service as common
from server.backend.imap import inline
from server.backend.imap.commands import TABLE, notify
from server.backend.imap.compressed import DeflatingWriter
from server.backend.imap.connection import ConnectionLock, session_streams
from server.backend.imap.fanout import IdleFanout
from server.backend.imap.session import (
    KEEPALIVE_SECONDS,
    ImapSession,
    InfoCache,
    Job,
    Login,
    SessionConfig,
)
from server.backend.imap.wakeups import Wakeups
from server.backend.pop3.connection import SessionProtocol
from server.backend.service import BackendService, open_default_store
from server.frontend.relay import take_buffered
from server.moves import fence
from server.protocols import proxyv2
from server.protocols.handover import Accepted
from server.protocols.imap import requests as rq
from server.runtime import gcclock
from server.runtime.linger import linger_close
from server.runtime.protocol_log import imap_result
from server.runtime.service import ServiceContext
from server.settings.models import ImapSettings, Server
from server.store.api import MailboxStore

READ_SIZE = 64 * 1024
WORKERS = 8
# Read-only commands (Job.inline) run on the event loop: handing a FETCH of a few
# messages to a worker thread costs more CPU than the FETCH, and the worker then waits for
# the GIL behind the loop (milliseconds under load). One slower than INLINE_SLOW sends
# them back to the workers for a while (server/backend/imap/inline.py). "Slower" is the
# command's own CPU time, or its wall time when it read from the disk: on a busy machine
# a quick command's wall time also counts the time other processes had the core, and
# that is no reason to pay a thread hand-off per command.
INLINE_SLOW = inline.INLINE_SLOW
# IDLE updates are small: they are written without waiting for the client to read them,
# unless that much is already queued for it (a client that stopped reading).
PUSH_BUFFER_LIMIT = 256 * 1024
# Output of pipelined commands queued for a client before the next command waits for the
# client to read (asyncio's drain). Without a bound a client that pipelines FETCH BODY[]
# and reads nothing makes the back end hold every answer in memory.
WRITE_HIGH_WATER = 256 * 1024


def _disk_reads() -> int:
    """Blocks this thread read from the disk and the major page faults it took so far."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_inblock + usage.ru_majflt


def log_parameters(args: rq.CommandArgs | None) -> str:
    """What the protocol log shows of a command's arguments: the message set and the
    folder(s) it names (never message data or search text)."""
    if args is None:
        return ""
    parts = [
        str(getattr(args, name))
        for name in ("seqset", "mechanism", "mailbox", "new_name")
        if getattr(args, name, None) is not None
    ]
    return " ".join(parts)


class _LogEntry:
    """A command being logged: it may take several jobs (IDLE ... DONE, FETCH in chunks)."""

    __slots__ = ("tag", "started", "rqsize", "rpsize")

    def __init__(self, tag: str | None, started: float) -> None:
        self.tag, self.started, self.rqsize, self.rpsize = tag, started, 0, 0


# What the data callback hands to the pump: a job for a worker thread (None: wait for
# the client first, or close), the octets its command took and when it started (log).
_Pending = tuple[Job | None, int, float]
_WAIT: _Pending = (None, 0, 0.0)  # the close, or a wait for the client: the pump's


class _Connection:
    __slots__ = (
        "service",
        "reader",
        "writer",
        "session",
        "lock",
        "last_activity",
        "timer",
        "watching",
        "next_keepalive",
        "loop",
        "client",
        "session_id",
        "logging",
        "carry",
        "waiting",
        "protocol",
        "done",
        "busy",
        "eof",
        "paused",
    )

    def __init__(
        self,
        service: ImapBackendService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: proxyv2.ProxyInfo | None,
        session: ImapSession | None = None,
        protocol: SessionProtocol | None = None,
    ) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer  # a DeflatingWriter (duck-typed) once COMPRESS is on
        self.client = client
        self.session = session or ImapSession(service.session_config(client), TABLE)
        self.lock = ConnectionLock()
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.watching: str | None = None  # the mailbox key of service.wakeups
        self.next_keepalive = 0.0
        self.session_id = next(service.session_ids)
        self.logging: _LogEntry | None = None
        self.carry = 0  # octets read for a command not yet known (before a literal)
        self.waiting = False  # in drain(): the client is not reading what we sent
        # A handed-off session's bytes come to received() (None: read from `reader`).
        self.protocol = protocol
        self.done: asyncio.Future[None] | None = None  # the session is over (callbacks)
        # The pump (for what has to wait), or a job in a worker thread (_run_in_worker).
        self.busy: asyncio.Future[None] | None = None
        self.eof = False  # the client is gone (callbacks)
        self.paused = False  # reading paused while the pump runs

    async def run(self, greeting: bytes) -> None:
        """`greeting`: the PREAUTH line (b"" for a handed-off client: the front end answered
        its login with the same capabilities)."""
        self.writer.write(greeting)
        if self.service.protocol_log.enabled:
            self._log("OpenSession", "", self.loop.time(), 0, len(greeting), "")
        self._arm(self._timeout())
        if self.protocol is not None:
            await self._run_in_callbacks(self.protocol)
            return
        reader, session = self.reader, self.session
        while not session.closed:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            self.last_activity = self.loop.time()
            session.receive(data)
            await self._pump()

    async def _pump(self) -> None:
        async with self.lock:
            await self._pump_held(None)
        if not self.session.closed:
            self._push_missed()

    async def _pump_held(self, first: _Pending | None) -> None:
        """Run the session's jobs, the lock held; `first`: the one the data callback
        handed over (its job, or None: wait for the client first)."""
        session = self.session
        while True:
            if first is not None:
                job, consumed, started = first
                first = None
                if job is None:
                    await self._wait_for_client()
                    if session.closed:
                        break
                    continue
                log_on = self.service.protocol_log.enabled
            else:
                step = self._next_job()
                if step is None:
                    break
                job, consumed, started, log_on = step
            out = await self._run_job(job)
            self._wrote(job, out, consumed, started, log_on)
            if out:
                out = b""  # a FETCH chunk is not kept alive while the client is slow
                await self._wait_for_client()
            self._after_job()
            if session.closed:
                break
        writer = self.writer
        if session.closed:
            # LOGOUT, or a BYE after an error: the client's unread bytes must not
            # turn our FIN into an RST that loses the BYE.
            self._detach()
            await linger_close(writer, self.reader)
        else:
            await writer.drain()

    def _next_job(self) -> tuple[Job, int, float, bool] | None:
        """The session's next job, with what its log line needs: the octets its command
        took and when it started (log off: one attribute check, nothing else)."""
        session = self.session
        log_on = self.service.protocol_log.enabled
        before = session.reader.buffered if log_on else 0
        job = session.next_job()
        if job is None:
            return None
        consumed = before - session.reader.buffered if log_on else 0
        return job, consumed, self.loop.time() if log_on else 0.0, log_on

    def _wrote(self, job: Job, out: bytes, consumed: int, started: float, log_on: bool) -> None:
        """A job's output to the client, COMPRESS switched on after its OK, its log line."""
        writer = self.writer
        if out:
            writer.write(out)
        session = self.session
        if session.compression is not None and not isinstance(writer, DeflatingWriter):
            # COMPRESS's OK went out in the clear: all after it is deflated.
            self.writer = cast(asyncio.StreamWriter, DeflatingWriter(writer, session.compression))
        if log_on:
            self._log_job(job, out, consumed, started)

    async def _wait_for_client(self) -> None:
        """Back-pressure: no next command (nor the next read, which waits for this pump)
        until the client has taken most of what is queued for it."""
        writer = self.writer
        if writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        self.waiting = True
        try:
            await writer.drain()
        finally:
            self.waiting = False
        self.last_activity = self.loop.time()  # the client reads: not idle

    # --- a handed-off session: commands answered in the data callback ----------------------
    async def _run_in_callbacks(self, protocol: SessionProtocol) -> None:
        """Serve until the session is closed or the client is gone, its bytes coming to
        received() (server/backend/imap/connection.py)."""
        done = self.done = self.loop.create_future()
        early = take_buffered(self.reader)  # what came before the session took the socket
        protocol.sink = self
        try:
            if early:
                self.received(early)
            if self.reader.at_eof():
                self.ended()
            await done
        finally:
            self._detach()
            busy = self.busy
            if busy is not None and not busy.done():
                busy.cancel()

    def received(self, data: bytes) -> None:
        """Bytes from the client: run every job that needs no wait now, or hand over to the
        pump (reading paused until it is done, so later commands wait in order)."""
        done = self.done
        if done is None or done.done():
            return
        self.last_activity = self.loop.time()
        try:
            self.session.receive(data)
            if self.busy is None:
                self._answer_now()
        except Exception as exc:  # a bug ends this session, never the service
            self._finish(exc)

    def ended(self) -> None:
        """EOF or the connection is gone: done, once what is being answered is."""
        self.eof = True
        if self.busy is None:
            self._finish()

    def _finish(self, exc: BaseException | None = None) -> None:
        done = self.done
        if done is None or done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def _detach(self) -> None:
        """Bytes go to the StreamReader again (the lingering close reads them there)."""
        protocol = self.protocol
        if protocol is None:
            return
        protocol.sink = None
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if not self.writer.transport.is_closing():
                cast(asyncio.Transport, self.writer.transport).resume_reading()

    def _answer_now(self) -> None:
        lock = self.lock
        if not lock.acquire_now():  # a push or the goodbye holds it: the pump waits for it
            self._hand_over(None, held=False)
            return
        try:
            pending = self._run_now()
        except BaseException:
            lock.release()
            raise
        if pending is not None:
            self._hand_over(pending, held=True)
            return
        lock.release()
        if self.eof:
            self._finish()

    def _run_now(self) -> _Pending | None:
        """The session's jobs that need no worker thread, run here; the first one that does
        (or a wait for the client, or the close) is returned for the pump."""
        service = self.service
        while True:
            step = self._next_job()
            if step is None:
                return None
            job, consumed, started, log_on = step
            if not job.blocking:
                out = job.run()
            elif job.inline and service.inline_allowed():
                out = self._run_inline(job)
            else:
                return job, consumed, started
            self._wrote(job, out, consumed, started, log_on)
            self._after_job()
            if self._must_wait(out):
                return _WAIT

    def _must_wait(self, out: bytes) -> bool:
        """After a job: the session is closed, or the client has more than
        WRITE_HIGH_WATER to read (the pump waits for it before the next command)."""
        return self.session.closed or bool(
            out and self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER
        )

    def _hand_over(self, first: _Pending | None, held: bool) -> None:
        if not self.paused and not self.writer.transport.is_closing():
            self.paused = True
            cast(asyncio.Transport, self.writer.transport).pause_reading()
        if held and first is not None and first[0] is not None:
            self._run_in_worker(first)
            return
        self.busy = self.loop.create_task(self._answer_later(first, held))

    def _run_in_worker(self, pending: _Pending) -> None:
        """A job for a worker thread, the lock held: its end comes back to the loop as one
        callback (_worker_done), with no task, coroutine or asyncio future per job; what
        follows it needs the pump only when it has to wait."""
        self.busy = self.loop.create_future()
        loop, done = self.loop, self._worker_done
        job = pending[0]
        assert job is not None
        self.service.executor.submit(job.run).add_done_callback(
            lambda future: loop.call_soon_threadsafe(done, pending, future)
        )

    def _worker_done(self, pending: _Pending, future: concurrent.futures.Future[bytes]) -> None:
        over = self.done is None or self.done.done()
        try:
            out = future.result()
            if over:
                self.lock.release()
                return
            job, consumed, started = pending
            assert job is not None
            self._wrote(job, out, consumed, started, self.service.protocol_log.enabled)
            self._after_job()
            following = _WAIT if self._must_wait(out) else self._run_now()
        except Exception as exc:  # as _answer_later: a bug ends this session only
            self.busy = None
            self.lock.release()
            self._finish(exc)
            return
        if following is not None:
            self._hand_over(following, held=True)
            return
        self.busy = None
        self.lock.release()
        self._released()

    async def _answer_later(self, first: _Pending | None, held: bool) -> None:
        """The task for what has to wait, and for the commands queued behind it."""
        try:
            if not held:
                await self.lock.acquire()
            try:
                await self._pump_held(first)
            finally:
                self.lock.release()
        except Exception as exc:  # ConnectionError from drain() included: the caller sorts
            self.busy = None
            self._finish(exc)
            return
        self.busy = None
        if self.session.closed:
            self._finish()
            return
        if not self._released():
            return
        try:
            self._answer_now()  # commands that came while the pump ran
        except Exception as exc:
            self._finish(exc)

    def _released(self) -> bool:
        """The lock given back after a wait: a push missed meanwhile goes out, reading
        resumes. False when the client is gone (the session is finished then)."""
        self._push_missed()
        self._resume_reading()
        if self.eof:
            self._finish()
            return False
        return True

    def _push_missed(self) -> None:
        """After the lock is released: push a change whose wake-up came while it was held
        (_on_change starts no push then, and nothing else would)."""
        session = self.session
        if session.closed:
            return
        if session.idle_pending or notify.pending(session) is not None:
            self.service.spawn(self._push())

    async def _run_job(self, job: Job) -> bytes:
        if not job.blocking:
            return job.run()
        service = self.service
        if job.inline and service.inline_allowed():
            return self._run_inline(job)
        return await self.loop.run_in_executor(service.executor, job.run)

    def _run_inline(self, job: Job) -> bytes:
        started, cpu, blocks = time.perf_counter(), time.thread_time(), _disk_reads()
        collected = gcclock.seconds()
        out = job.run()
        collecting = gcclock.seconds() - collected
        self.service.ran_inline(
            time.perf_counter() - started - collecting,
            time.thread_time() - cpu - collecting,
            _disk_reads() != blocks,
        )
        return out

    # --- protocol log ------------------------------------------------------------------
    def _log_job(self, job: Job, out: bytes, consumed: int, started: float) -> None:
        if not job.name:  # a literal's "+": the command's first bytes
            self.carry += consumed
            return
        entry = self.logging
        if entry is None or entry.tag != job.tag:
            entry = self.logging = _LogEntry(job.tag, started)
        entry.rqsize += consumed + self.carry
        self.carry = 0
        entry.rpsize += len(out)
        result = imap_result(out, job.tag)
        if result is None:
            return
        self.logging = None
        command = job.command
        parameters = log_parameters(command.args if command else None)
        self._log(job.name.lower(), parameters, entry.started, entry.rqsize, entry.rpsize, result)

    def _log(
        self, name: str, parameters: str, started: float, rqsize: int, rpsize: int, result: str
    ) -> None:
        local = self.writer.get_extra_info("sockname") or ("", 0)
        client = (
            (self.client.client_address, self.client.client_port)
            if self.client
            else (self.writer.get_extra_info("peername") or ("", 0))
        )
        login = self.session.login
        self.service.protocol_log.command(
            self.session_id,
            f"{local[0]}:{local[1]}",
            f"{client[0]}:{client[1]}",
            login.name if login else None,
            (self.loop.time() - started) * 1000,
            rqsize,
            rpsize,
            name,
            parameters,
            result,
        )

    def _after_job(self) -> None:
        session = self.session
        if self.watching is None and session.mailbox is not None and not session.closed:
            # Subscribing here, on the loop, makes the store wake us on this loop. Not
            # after LOGOUT: release() would take it back at once (a login-logout session).
            self.watching = self.service.wakeups.add(session.mailbox, self)
        if session.idling and not self.next_keepalive:
            self.next_keepalive = self.loop.time() + KEEPALIVE_SECONDS
            if self.timer is None or self.timer.when() > self.next_keepalive:
                self._arm(KEEPALIVE_SECONDS)
        elif not session.idling:
            self.next_keepalive = 0.0

    def woken(self) -> bool:
        """A change to the mailbox: True when an update is to be pushed now (else the
        running command's end brings it, or the next command)."""
        session = self.session
        session.mark_dirty()
        return (session.idling or session.notify is not None) and not self.lock.locked()

    def push_in_place(self) -> bool:
        """Push this session's IDLE update now, on the loop, when it needs no store call.
        True: nothing is left for the per-session path (_push): pushed, nothing to push,
        or a command holds the lock (its end pushes what is missed)."""
        session = self.session
        if session.closed or self.lock.locked() or self.writer.is_closing():
            return True  # closing: the client is gone, or goes with a BYE already sent
        if session.notify is not None:
            return False  # NOTIFY (RFC 5465) reads the store on its own
        if not session.idle_pending:
            return True
        job = self.service.fanout.in_place(session)
        if job is None:
            return False
        out = job.run()
        if out:
            self.writer.write(out)
            if session.closed or self.writer.transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
                # A BYE (the folder is gone) or a client that stopped reading: as _push.
                self.service.spawn(self._flush())
        return True

    async def _flush(self) -> None:
        async with self.lock:
            if self.session.closed:
                with contextlib.suppress(Exception):
                    await self.writer.drain()
                self.writer.close()
                return
            await self.writer.drain()
        self._push_missed()

    async def prefetch(self) -> None:
        """Read the changes for every session of this one's folder and MODSEQ (or wait
        for whoever reads them), so that they are pushed in place."""
        fanout = self.service.fanout
        reading = fanout.reading(self.session)
        if reading is not None:
            await asyncio.wait([reading])
            return
        push = fanout.prefetch(self.session, self.loop.create_future)
        if push is None:
            return
        try:
            await self._run_job(push.job)
        except Exception:  # noqa: BLE001 - each session then reads (and logs) on its own
            pass
        finally:
            done = fanout.finish(push)
            if done is not None:
                done.set_result(None)

    async def _push(self) -> None:
        async with self.lock:
            if self.session.closed:
                return
            out = await self._idle_update()
            # NOTIFY (RFC 5465): other mailboxes, and the selected one outside IDLE.
            if not self.session.closed and (job := notify.pending(self.session)) is not None:
                out += await self._run_job(job)
            if out:
                self.writer.write(out)
                if self.session.closed:  # a BYE: the selected folder is gone
                    await self.writer.drain()
                    self.writer.close()
                elif self.writer.transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
                    await self.writer.drain()
        self._push_missed()

    async def _idle_update(self) -> bytes:
        """This session's IDLE update, through the service's fan-out (one store read per
        delivery for all the sessions it wakes)."""
        fanout, session = self.service.fanout, self.session
        reading = fanout.reading(session)
        if reading is not None:
            # Another session of this folder and MODSEQ reads the changes now: its
            # answer then serves this one in place.
            await asyncio.wait([reading])
        push = fanout.push(session, self.loop.create_future)
        if push is None:
            return b""
        try:
            return await self._run_job(push.job)
        finally:
            done = fanout.finish(push)
            if done is not None:
                done.set_result(None)

    # --- timer: autologout and keep-alive -------------------------------------------------
    def _timeout(self) -> float:
        imap = self.service.imap_settings()
        span = (
            imap.AuthenticatedConnectionTimeout
            if self.session.authenticated
            else imap.PreAuthenticatedConnectionTimeout
        )
        return span.total_seconds()

    def _arm(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(max(delay, 0.05), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.session.closed or self.writer.is_closing():
            return
        now = self.loop.time()
        deadline = self.last_activity + self._timeout()
        if now >= deadline and not self.lock.locked():
            self.writer.write(self.session.bye("Autologout; idle for too long"))
            self.writer.close()
            return
        if now >= deadline and self.waiting:
            # Nothing read from us (and nothing sent) for the whole timeout: the client is
            # gone or stuck, and what we queued for it is freed with the connection.
            self.writer.transport.abort()
            return
        wake = deadline if now < deadline else now + 1.0
        if self.session.idling and self.next_keepalive:
            if now >= self.next_keepalive:
                self.writer.write(self.session.keepalive())
                self.next_keepalive = now + KEEPALIVE_SECONDS
            wake = min(wake, self.next_keepalive)
        self._arm(wake - now)

    async def goodbye(self, text: str) -> None:
        """Server shutdown: BYE now if no command runs, else right after it."""
        async with self.lock:
            if not self.session.closed and not self.writer.is_closing():
                self.writer.write(self.session.bye(text))
                with contextlib.suppress(Exception):
                    await self.writer.drain()
            self.writer.close()

    def release(self) -> None:
        self.session.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watching is not None:
            with contextlib.suppress(Exception):
                self.service.wakeups.remove(self.watching, self)
            self.watching = None


class ImapBackendService(BackendService):
    CERTIFICATE = "IMAP"
    PROTOCOL = "IMAP4"

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._connections: dict[asyncio.Task[Any], _Connection | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="imap-be")
        self.info_cache = InfoCache()
        self.fanout: IdleFanout[asyncio.Future[None]] = IdleFanout()
        self.wakeups: Wakeups[_Connection] = Wakeups(self._on_change)
        self._inline = inline.InlineBackoff()
        gcclock.install()  # collections are not a slow command (ran_inline)

    # --- settings and sessions ------------------------------------------------------------
    def imap_settings(self) -> ImapSettings:
        return self.ctx.server_settings.ImapSettings

    def ports(self, server: Server) -> tuple[int, int]:
        return server.ImapBackEndPort, server.ImapBackEndSSLPort

    def session_config(self, client: proxyv2.ProxyInfo | None) -> SessionConfig:
        return SessionConfig(
            settings=lambda: self.ctx.settings,
            server=self.ctx.server,
            authenticate=self.authenticate,
            info_cache=self.info_cache,
            client_address=client.client_address if client else "",
            receipts=self.receipt_sender(),
            open_mailbox=self.open_mailbox,
        )

    def open_mailbox(self, identity: str) -> MailboxStore | None:
        """A mailbox of this server by name or address (URLAUTH URLs name their owner)."""
        entry = common.find_entry(self.ctx.settings, identity)
        if (
            entry is None
            or entry.server_name.lower() != self.ctx.server.lower()
            or self._store is None
        ):
            return None
        return self._store.mailbox(entry.name)

    def authenticate(self, authzid: str, authcid: str, password: str) -> Login | str:
        """AUTHENTICATE is never reached here (sessions start authenticated after the
        hand-over); should it be, it is refused."""
        return "Only the front-end hand-over logs in here"

    def open_login(self, mailbox: str) -> Login | str:
        """The mailbox a proved front end hands over (runs in a worker thread); a str is
        the refusal text."""
        try:
            entry = common.check_hand_over(self.ctx, self.ctx.settings, "IMAP4", mailbox)
        except common.HandOverRefused as refused:
            return refused.text
        assert self._store is not None
        return Login(entry.name, self._store.mailbox(entry.name), entry.mailbox)

    async def _open_login(self, mailbox: str) -> Login | str:
        login = self.open_login_now(mailbox)
        if login is not None:
            return login
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.open_login, mailbox
        )

    def open_login_now(self, mailbox: str) -> Login | str | None:
        """open_login on the event loop, when nothing on its way can block: the directory
        is the settings file's and this process has the mailbox open already (a first open
        reads its database). None: run open_login in a worker thread."""
        settings, store = self.ctx.settings, self._store
        if store is None or common.directory_may_block(self.ctx, settings):
            return None
        try:
            entry = common.check_hand_over(self.ctx, settings, "IMAP4", mailbox)
        except common.HandOverRefused as refused:
            return refused.text
        box = store.opened(entry.name)
        if box is None:
            return None
        return Login(entry.name, box, entry.mailbox)

    def inline_allowed(self) -> bool:
        backoff = self._inline
        return not backoff.off_until or backoff.allowed(time.monotonic())

    def ran_inline(self, seconds: float, cpu: float, disk: bool) -> None:
        if cpu > INLINE_SLOW or (disk and seconds > INLINE_SLOW):
            off = self._inline.slow(time.monotonic())
            self.ctx.log.info(
                "a read-only command took %.0f ms on the event loop (%.0f ms CPU%s); "
                "store commands go to worker threads for %.0f s",
                seconds * 1000,
                cpu * 1000,
                ", reading the disk" if disk else "",
                off,
            )

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- IDLE: the sessions one change wakes ----------------------------------------------
    def _on_change(self, connections: list[_Connection]) -> None:
        woken = [c for c in connections if c.woken()]
        if woken:
            self.spawn(self._push_woken(woken))

    async def _push_woken(self, connections: list[_Connection]) -> None:
        """Push the update of every session one change woke, from this one task: one store
        read per folder and MODSEQ (prefetch), then each session in place. A session that
        needs the store itself (the one that claims \\Recent, NOTIFY, live search
        contexts) gets a task of its own, as before."""
        fanout = self.fanout
        readers: dict[object, _Connection] = {}
        for c in connections:
            session = c.session
            if session.notify is None and session.idle_pending:
                key = fanout.key(session)
                if (
                    key is not None
                    and key not in readers
                    and not fanout.answer(key, session.woken_at)
                ):
                    readers[key] = c
        if readers:
            await asyncio.gather(*(c.prefetch() for c in readers.values()))
        for c in connections:
            try:
                if not c.push_in_place():
                    self.spawn(c._push())
            except Exception:  # one session's failure must not cost the others their push
                self.ctx.log.exception("imap idle push failed")

    # --- service ----------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        self._close_listeners()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        conns = [c for c in self._connections.values() if c is not None]
        if conns:
            # A client that does not read can hold its connection's lock in drain(): the
            # goodbyes get the grace period, not more.
            byes = [asyncio.ensure_future(c.goodbye("Server shutting down")) for c in conns]
            _, late = await asyncio.wait(byes, timeout=grace)
            for task in late:
                task.cancel()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(deadline - loop.time(), 0.1))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.to_thread(self.executor.shutdown, True, cancel_futures=True)
        await self._close_store()

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"op": "end-sessions", "mailbox": name, "text": ...}: a move of the mailbox is
        switching it to another server. Each of its sessions gets BYE once its running
        command is done (a client that reads nothing is cut off after END_GRACE); the
        answer comes when none of them can write any more."""
        if request.get("op") != "end-sessions":
            return await super().control(request)
        name = str(request.get("mailbox", "")).casefold()
        text = str(request.get("text") or "[UNAVAILABLE] The mailbox has moved; reconnect")
        sessions = [
            c
            for c in self._connections.values()
            if c is not None
            and c.session.login is not None
            and c.session.login.name.casefold() == name
        ]

        async def end(connection: _Connection) -> None:
            bye = asyncio.ensure_future(connection.goodbye(text))
            _, late = await asyncio.wait([bye], timeout=common.END_GRACE)
            if late:
                connection.writer.transport.abort()  # drain() fails: the lock comes free
                await asyncio.wait([bye], timeout=common.END_GRACE)

        return await common.end_sessions(name, sessions, end, self.ctx)

    # --- connections --------------------------------------------------------------------------
    def _handler_for(self, implicit_tls: bool):  # noqa: ANN202 - ListenerSet's Handler type
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Cancelled at stop() after the grace period: end quietly (asyncio's stream
            # server would log a cancelled handler as an error).
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve(reader, writer)

        return handle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = None
        handed = None
        try:
            handed = await self.hand_over(
                reader, writer, "IMAP4", lambda accepted: self._open_login(accepted.mailbox)
            )
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            self.ctx.log.exception("imap connection failed")
        if handed is None:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        accepted, login = handed
        session = ImapSession(self.session_config(accepted.client), TABLE)
        await self._run(reader, writer, accepted.client, session, session.preauth(login))

    async def _run(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: proxyv2.ProxyInfo | None,
        session: ImapSession,
        greeting: bytes,
        protocol: SessionProtocol | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(self, reader, writer, client, session, protocol)
        self._connections[task] = connection
        try:
            # A move's fence raised since the login's check: its end-sessions request may
            # not have seen this session (server/moves/fence.py).
            login = session.login
            moving = (
                None if login is None else fence.refusal(self.ctx.home, self.ctx.server, login.name)
            )
            if moving is not None:
                writer.write(session.bye(f"[UNAVAILABLE] {moving}"))
                return
            await connection.run(greeting)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            self.ctx.log.exception("imap connection failed")
        finally:
            self._connections.pop(task, None)
            connection.release()
            self.protocol_log.end(connection.session_id)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- the hand-off channel (backend/handoff.py) ------------------------------------------
    async def handoff_open(
        self, accepted: Accepted
    ) -> tuple[bytes, tuple[ImapSession, proxyv2.ProxyInfo | None]] | str:
        loop = asyncio.get_running_loop()
        login = await loop.run_in_executor(self.executor, self.open_login, accepted.mailbox)
        return self._preauth(login, accepted)

    def handoff_open_now(
        self, accepted: Accepted
    ) -> tuple[bytes, tuple[ImapSession, proxyv2.ProxyInfo | None]] | str | None:
        login = self.open_login_now(accepted.mailbox)
        return None if login is None else self._preauth(login, accepted)

    def _preauth(
        self, login: Login | str, accepted: Accepted
    ) -> tuple[bytes, tuple[ImapSession, proxyv2.ProxyInfo | None]] | str:
        if isinstance(login, str):
            return login
        session = ImapSession(self.session_config(accepted.client), TABLE)
        return session.preauth(login), (session, accepted.client)

    def handoff_start(
        self,
        opened: tuple[ImapSession, proxyv2.ProxyInfo | None],
        sock: socket.socket,
        read_ahead: bytes,
        ended: Callable[[], None],
    ) -> None:
        session, client = opened

        async def serve() -> None:
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    # COMPRESS belongs to the client's link: with no front end in the
                    # path (else AF_UNIX: a front end relays) the session does it.
                    session.direct = sock.family != socket.AF_UNIX
                    reader, writer, protocol = await session_streams(sock, read_ahead)
                    await self._run(reader, writer, client, session, b"", protocol)
            finally:
                ended()

        self._connections[asyncio.ensure_future(serve())] = None

    def handoff_discard(self, opened: tuple[ImapSession, proxyv2.ProxyInfo | None]) -> None:
        opened[0].release()


__all__ = ["ImapBackendService", "open_default_store"]
