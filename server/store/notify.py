"""Change notification between the processes that share a mailbox database.

Every process that has subscribers binds one Unix datagram socket in `<database>/notify/`.
A writer, after its commit, sends the mailbox key to every socket there (and calls the
subscribers of its own process directly). Sockets left behind by killed processes answer
ECONNREFUSED and are removed by the first writer that meets them.

The receiving side is one thread blocked in recv(): an idle process costs no CPU, and
subscribers on any number of event loops are woken with call_soon_threadsafe. Bursts are
coalesced: a subscriber whose wake-up is still pending is not queued again (it reads what
changed with changes_since() anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.runtime.filemodes import private_dir

# AF_UNIX paths are limited to 108 bytes; longer ones are reached through the folder's
# file descriptor (/proc/self/fd/N/name), which Linux resolves for bind() and sendto().
_MAX_SUN_PATH = 100
_STOP = b"\0stop"
# How old the notify folder's mtime must be for a listing of it to be kept (_peer_names):
# past the coarsest timestamp granularity of the filesystems it may be on (2 s: FAT).
TRUST_AFTER = 3_000_000_000


@dataclass(eq=False)
class _Subscriber:
    callback: Callable[[], None]
    loop: asyncio.AbstractEventLoop | None
    pending: bool = False
    active: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wake(self) -> None:
        with self.lock:
            if self.pending or not self.active:
                return
            self.pending = True
        if self.loop is None:
            self._run()
            return
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: the subscriber is gone
            self.active = False

    def _run(self) -> None:
        with self.lock:
            self.pending = False
            if not self.active:
                return
        self.callback()


class Notifier:
    """Cross-process change notification for one mailbox database folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._subs: dict[str, list[_Subscriber]] = {}
        # Notifications delivered per key: lets readers tell whether a result computed
        # at generation g already includes every commit announced up to g.
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._recv: socket.socket | None = None
        self._own_name: str | None = None
        self._thread: threading.Thread | None = None
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        self._dirfd: int | None = None
        self._closed = False
        # (the folder's mtime, its sockets): see _peer_names.
        self._peers: tuple[int, list[str]] | None = None

    # --- addresses -------------------------------------------------------------------
    def _address(self, name: str) -> str:
        path = str(self.folder / name)
        if len(path.encode()) <= _MAX_SUN_PATH:
            return path
        if self._dirfd is None:
            self._dirfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dirfd}/{name}"

    # --- subscribing -----------------------------------------------------------------
    def subscribe(self, key: str, callback: Callable[[], None]) -> Callable[[], None]:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # no loop: called on the listener thread (tests, tools)
        sub = _Subscriber(callback, loop)
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            self._ensure_listener()
            self._subs.setdefault(key, []).append(sub)

        def unsubscribe() -> None:
            sub.active = False
            with self._lock:
                subs = self._subs.get(key)
                if subs and sub in subs:
                    subs.remove(sub)
                    if not subs:
                        del self._subs[key]

        return unsubscribe

    def _ensure_listener(self) -> None:
        if self._recv is not None:
            return
        private_dir(self.folder)
        name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self._address(name))
        # A big receive buffer so bursts from many writers are not refused.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._recv, self._own_name = sock, name
        self._thread = threading.Thread(target=self._listen, name="mailstore-notify", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        sock = self._recv
        assert sock is not None
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            if data == _STOP:
                return
            keys = {data}
            # Drain what else is queued so a burst wakes each subscriber once.
            sock.setblocking(False)
            try:
                while True:
                    more = sock.recv(4096)
                    if more == _STOP:
                        return
                    keys.add(more)
            except (BlockingIOError, OSError):
                pass
            finally:
                sock.setblocking(True)
            for key in keys:
                self.local(key.decode("utf-8", "replace"))

    def generation(self, key: str) -> int:
        """How many notifications for `key` this process has delivered; each is counted
        before its subscribers are woken, and only after its commit."""
        return self._generations.get(key, 0)

    # --- publishing ------------------------------------------------------------------
    def local(self, key: str) -> None:
        """Wake the subscribers of this process."""
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            subs = list(self._subs.get(key, ()))
        for sub in subs:
            sub.wake()

    def publish(self, key: str) -> None:
        """After a commit: wake the subscribers of `key` in every process."""
        self.local(key)
        payload = key.encode("utf-8")
        for name in self._peer_names():
            if name == self._own_name:
                continue
            try:
                self._send.sendto(payload, self._address(name))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / name)  # its process is gone
            except OSError as exc:
                # A full receive queue means a wake-up is already waiting there.
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    raise

    def _peer_names(self) -> list[str]:
        # A listing is kept while the folder's mtime stays what it was, and only when
        # that mtime was already TRUST_AFTER old at the listing: a socket bound within the
        # same (coarse) timestamp tick as the listing would leave the mtime unchanged, and
        # one bound later than TRUST_AFTER past it cannot. A stat is one system call where
        # a listing is four, at every commit.
        try:
            mtime = os.stat(self.folder).st_mtime_ns
            kept = self._peers
            if kept is not None and kept[0] == mtime:
                return kept[1]
            names = [n for n in os.listdir(self.folder) if n.endswith(".sock")]
        except FileNotFoundError:
            return []
        self._peers = (mtime, names) if time.time_ns() - mtime > TRUST_AFTER else None
        return names

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for subs in self._subs.values():
                for sub in subs:
                    sub.active = False
            self._subs.clear()
            sock, name, thread = self._recv, self._own_name, self._thread
            self._recv = None
        if sock is not None and name is not None:
            with contextlib.suppress(OSError):
                self._send.sendto(_STOP, self._address(name))
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2)
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)
        self._send.close()
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None
