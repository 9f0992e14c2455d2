"""Message bodies as files: how they are named, written, made durable and read.

A body file is written once and never changed. Its name is `<writer token>.<n>`: the token
names the process that wrote it (pid and random), whose lock in writers/<token>.lock it
holds while it lives, so an unreferenced file can be told in flight (its writer alive) from
an orphan of a crash (its writer dead; see maintenance.clean_orphans). A name is never
given twice, so caches keyed by it never outlive their message into another one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import itertools
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from server.store.api import BodyWriter, StoreError


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path | str, data: bytes, sync: bool = True) -> None:
    """A new file (never an existing one: O_EXCL) holding `data`, fsync'd unless the
    caller syncs a batch (sync_batch)."""
    # O_DSYNC: each write returns durable (data and the size that reaches it, as
    # fdatasync), one system call where write and fsync were two.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (os.O_DSYNC if sync else 0)
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def read_path(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()
BATCH_SYNC = 8  # from this many bodies on, one syncfs() beats an fsync() per file


def sync_batch(folder: Path, files: list[Path]) -> None:
    """Make freshly written files durable: one syncfs() for a batch (a bulk import would
    otherwise pay one journal commit per message), fsync() per file as the fallback."""
    if _syncfs is not None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in files:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Writers:
    """This process's writer token, and the liveness of other processes' tokens, in one
    server's writers/ folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.token = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._seq = itertools.count(1)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def new_name(self) -> str:
        """A body file name never given before. The first one takes the writer lock."""
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    fd = os.open(
                        self.folder / f"{self.token}.lock",
                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                        0o600,
                    )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    self._fd = fd
        return f"{self.token}.{next(self._seq)}"

    def alive(self, token: str) -> bool:
        if token == self.token:
            return True
        try:
            fd = os.open(self.folder / f"{token}.lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def clean(self) -> None:
        """Remove the lock files of dead writers."""
        for entry in os.listdir(self.folder):
            token = entry.removesuffix(".lock")
            if token != self.token and not self.alive(token):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / entry)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / f"{self.token}.lock")


class FileBody(BodyWriter):
    """A message body written straight into the file that becomes its body file (see
    SqliteMailbox.new_body). Written from one thread at a time. `box` is the mailbox whose
    append may take the file over as it is (any other copies its bytes)."""

    def __init__(self, box: object, msgs: Path, name: str) -> None:
        super().__init__()
        self.box = box
        self.name = name
        self.path = msgs / name
        self._fd: int | None = os.open(
            self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise StoreError("The message being written was discarded.")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._size += n

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            while piece := fh.read(size):
                yield piece

    def read(self) -> bytes:
        return read_path(str(self.path))

    def finish(self, sync: bool) -> str:
        """Close the file (fsync'd unless the caller syncs a batch); its name."""
        fd, self._fd = self._fd, None
        if fd is None:
            raise StoreError("The message being written was discarded.")
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return self.name

    def discard(self) -> None:
        if self.taken:
            return
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
