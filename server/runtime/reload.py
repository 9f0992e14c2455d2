"""Watching the settings folder (and the certificate index) for live reload.

On Linux the watch is a bare inotify descriptor registered with the event loop: no thread and no
timer exist until the kernel reports a change, so an idle service uses no CPU (watchfiles wakes
every 50 ms to poll its Rust channel). Elsewhere watchfiles' `awatch` is used. The folder is
watched, not the file, because editors and `store.atomic_write` replace the file by a rename.
The same watch (FolderWatch) tells the submission service about its spool folder.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.settings.paths import Home

DEBOUNCE = 0.05  # seconds: a burst of writes (temp file, rename, fsync) gives one reload

IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")


def is_certificate_index(home: Home, path: Path) -> bool:
    """certs/certificates.json: which certificate each service kind uses (server.runtime.tls);
    rewritten (atomic rename) by New-/Import-/Enable-ExchangeCertificate."""
    return path == home.certs / "certificates.json"


def is_relevant(home: Home, path: Path) -> bool:
    """settings.toml itself, or anything in secrets/ (passwords, the proxy secret) that is
    not an editor's or atomic_write's temporary file."""
    if path == home.settings_file:
        return True
    if path.parent == home.secrets or path == home.secrets:
        return not path.name.startswith(".")
    return False


class _Inotify:
    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self.folders: dict[int, Path] = {}

    def watch(self, folder: Path) -> None:
        wd = self._add(self.fd, os.fsencode(folder), _MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
        self.folders[wd] = folder

    def read(self) -> list[Path]:
        paths = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return paths
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                folder = self.folders.get(wd)
                if folder is not None:
                    paths.append(folder / os.fsdecode(raw) if raw else folder)

    def close(self) -> None:
        os.close(self.fd)


class FolderWatch:
    """Reports the paths that change in some folders, on the event loop, to `on_paths(paths)`.

    With inotify the watch is not recursive: `start(folder, *optional)` watches those folders
    and `watch()` adds one made later. Without it, watchfiles' `awatch` watches the first
    folder recursively (`awatch_options` passed on: filter, debounce) and reports to
    `on_polled` (default `on_paths`); awatch has debounced already.
    """

    def __init__(
        self,
        on_paths: Callable[[list[Path]], None],
        *,
        on_polled: Callable[[list[Path]], None] | None = None,
        **awatch_options: Any,
    ) -> None:
        self.on_paths = on_paths
        self.on_polled = on_polled or on_paths
        self._awatch_options = awatch_options
        self._inotify: _Inotify | None = None
        self._fallback: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self, folder: Path, *optional: Path) -> None:
        """Watch `folder` (which must exist) and those of `optional` that exist."""
        loop = asyncio.get_running_loop()
        try:
            inotify = _Inotify()
        except (OSError, AttributeError):
            self._fallback = loop.create_task(self._poll(folder))
            return
        try:
            inotify.watch(folder)
            for extra in optional:
                try:
                    inotify.watch(extra)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
        except OSError:
            inotify.close()
            raise
        loop.add_reader(inotify.fd, self._readable)
        self._inotify = inotify

    def watches(self, folder: Path) -> bool:
        return self._inotify is not None and folder in self._inotify.folders.values()

    def watch(self, folder: Path) -> bool:
        """Watch a folder made after start; False when it cannot be, or when polling."""
        if self._inotify is None:
            return False
        try:
            self._inotify.watch(folder)
        except OSError:
            return False
        return True

    def _readable(self) -> None:
        assert self._inotify is not None
        self.on_paths(self._inotify.read())

    async def _poll(self, folder: Path) -> None:
        from watchfiles import awatch

        async for changes in awatch(folder, stop_event=self._stop, **self._awatch_options):
            self.on_polled([Path(path) for _change, path in changes])

    def close(self) -> None:
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._stop.set()
        if self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None


class _Debounced:
    """Calls `callback` once, DEBOUNCE seconds after the last of a burst of `schedule()`s;
    a coroutine it returns runs as a task."""

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self._pending: asyncio.TimerHandle | None = None

    def schedule(self) -> None:
        self.cancel()
        self._pending = asyncio.get_running_loop().call_later(DEBOUNCE, self.fire)

    def fire(self) -> None:
        self._pending = None
        result = self.callback()
        if asyncio.iscoroutine(result):
            asyncio.get_running_loop().create_task(result)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class SettingsWatcher:
    """Calls `on_change()` (debounced) after settings.toml or secrets/ changed, and
    `on_certificates()` (debounced too) after certs/certificates.json changed."""

    def __init__(
        self,
        home: Home,
        on_change: Callable[[], Awaitable[None] | None],
        on_certificates: Callable[[], object] | None = None,
    ) -> None:
        self.home = home
        self.on_change = on_change
        self.on_certificates = on_certificates
        self._settings = _Debounced(on_change)
        self._certificates = _Debounced(on_certificates or (lambda: None))
        self._watch = FolderWatch(
            self._changed,
            on_polled=self._polled,
            watch_filter=lambda _change, path: self._wanted(Path(path)),
            debounce=int(DEBOUNCE * 1000),
        )

    def _folders(self) -> list[Path]:
        """Folders watched besides the home folder (made later, possibly)."""
        return [self.home.secrets] + ([self.home.certs] if self.on_certificates else [])

    async def start(self) -> None:
        await self._watch.start(self.home.root, *self._folders())

    def _changed(self, paths: list[Path]) -> None:
        for folder in self._folders():
            if folder in paths and not self._watch.watches(folder):
                if not self._watch.watch(folder):  # made after start: watch it from now on
                    continue
                if folder == self.home.certs:
                    paths.append(self.home.certs / "certificates.json")  # written already?
        if any(is_relevant(self.home, p) for p in paths):
            self._settings.schedule()
        if self.on_certificates is not None and any(
            is_certificate_index(self.home, p) for p in paths
        ):
            self._certificates.schedule()

    def _wanted(self, path: Path) -> bool:
        return is_relevant(self.home, path) or (
            self.on_certificates is not None and is_certificate_index(self.home, path)
        )

    def _polled(self, paths: list[Path]) -> None:
        if any(is_relevant(self.home, p) for p in paths):
            self._settings.fire()
        if any(is_certificate_index(self.home, p) for p in paths):
            self._certificates.fire()

    def close(self) -> None:
        self._settings.cancel()
        self._certificates.cancel()
        self._watch.close()
