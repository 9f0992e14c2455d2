"""The fence a mailbox move raises on the SOURCE server, kept beside that server's mailbox
database (data/<Server>/moves/<mailbox key>.fence) and read only by that server's own
services: MSExchangeDelivery, the IMAP4 and POP3 back ends, and the replication service that
raises it on the mover's request.

While a fence is "locked" (the move's final pass), delivery answers 451 (the spool retries,
and its retry looks the mailbox's server up again) and the back ends refuse hand-overs with a
temporary error. After the switch the fence says "moved": for MOVED_GRACE seconds a process
whose view of the directory is still the old one (a settings reload in flight, LDAP answers
cached for five minutes) refuses in the same way instead of writing into a mailbox that is
no longer there. A move INTO this server takes its fence down when it starts.

Deliveries hold the fence file's lock shared around their check and append (`delivering`);
raising the fence takes it exclusively, so it waits for the appends in flight and none can
start after it without seeing the fence."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.settings.paths import Home
from server.settings.store import atomic_write
from server.store.usage import mailbox_key

LOCKED = "locked"
MOVED = "moved"
# On the TARGET, from the start of the copy to MOVED_GRACE after the switch: its own
# processes may still hold the old directory answer ("on the source server"), which is then
# a reason to retry, not to bounce (550 5.1.6) or to refuse a login for good.
INCOMING = "incoming"
# Longer than the directory answers a process may reuse (LDAP stale_ok: five minutes).
MOVED_GRACE = 600.0


@dataclass(frozen=True)
class Fence:
    state: str  # LOCKED or MOVED
    target: str  # the server the mailbox is moving (or moved) to
    since: float  # time.time() when raised

    def refuses(self, now: float | None = None) -> bool:
        """Whether writes to the mailbox on this server are refused now."""
        if self.state == INCOMING:
            return False
        return self.in_transit(now)

    def in_transit(self, now: float | None = None) -> bool:
        """Whether a directory answer that puts the mailbox on another server may be stale:
        answer with a temporary failure rather than a permanent one."""
        if self.state == LOCKED:
            return True
        return (time.time() if now is None else now) - self.since < MOVED_GRACE

    def reason(self) -> str:
        if self.state == LOCKED:
            return f"the mailbox is being moved to server {self.target}; try again in a moment"
        if self.state == INCOMING:
            return "the mailbox is moving to this server; try again in a moment"
        return f"the mailbox has moved to server {self.target}; try again in a moment"


def folder(home: Home, server: str) -> Path:
    return home.database(server) / "moves"


def _paths(home: Home, server: str, mailbox: str) -> tuple[Path, Path]:
    base = folder(home, server)
    key = mailbox_key(mailbox)
    return base / f"{key}.fence", base / f"{key}.lock"


# Every hand-over to a back end asks whether its mailbox is fenced, twice; almost never is
# one. The names of the fence files are listed once and kept while the folder's mtime says
# nothing was added, renamed or removed there (a fence is written by rename and lowered by
# unlink). A folder changed less than _SETTLE seconds ago is listed every time: a change
# within the same tick of the file system's clock would leave its mtime as it was.
_SETTLE = 2.0
_listings: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}
_folders: dict[tuple[str, str], str] = {}


def _fence_names(base: str) -> frozenset[str]:
    """The fence files in the folder `base` now."""
    try:
        seen = os.stat(base)
    except FileNotFoundError:
        return frozenset()
    key = (seen.st_ino, seen.st_mtime_ns)
    cached = _listings.get(base)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        names = frozenset(name for name in os.listdir(base) if name.endswith(".fence"))
    except FileNotFoundError:
        return frozenset()
    if time.time() - seen.st_mtime > _SETTLE:
        _listings[base] = (key, names)
    return names


def read(home: Home, server: str, mailbox: str) -> Fence | None:
    base = _folders.get((str(home.root), server))
    if base is None:
        base = _folders[(str(home.root), server)] = str(folder(home, server))
    name = f"{mailbox_key(mailbox)}.fence"
    if name not in _fence_names(base):
        return None
    path = Path(base, name)
    try:
        data = json.loads(path.read_text("utf-8"))
        return Fence(str(data["state"]), str(data["target"]), float(data["since"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable: refuse rather than write past a move that may be under way.
        return Fence(LOCKED, "?", time.time())


def refusal(home: Home, server: str, mailbox: str) -> str | None:
    """Why writes to `mailbox` on `server` are refused now (None: they are not)."""
    fence = read(home, server, mailbox)
    return fence.reason() if fence is not None and fence.refuses() else None


def in_transit(home: Home, server: str, mailbox: str) -> str | None:
    """Why "the mailbox is on another server" may be a stale answer here now (None: it is
    not in a move that concerns this server)."""
    fence = read(home, server, mailbox)
    return fence.reason() if fence is not None and fence.in_transit() else None


@contextlib.contextmanager
def _flock(home: Home, server: str, mailbox: str, mode: int) -> Iterator[None]:
    _, lock = _paths(home, server, mailbox)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def delivering(home: Home, server: str, mailbox: str) -> Iterator[str | None]:
    """Around one delivery's check and append: the refusal (None: deliver). Raising the
    fence waits until this block is left."""
    with _flock(home, server, mailbox, fcntl.LOCK_SH):
        yield refusal(home, server, mailbox)


def _write(home: Home, server: str, mailbox: str, fence: Fence) -> None:
    path, _ = _paths(home, server, mailbox)
    data = json.dumps({"state": fence.state, "target": fence.target, "since": fence.since})
    # Private (0o600): the fence names the move's target server.
    atomic_write(path, data.encode(), mode=0o600)


def raise_fence(home: Home, server: str, mailbox: str, target: str, state: str = LOCKED) -> None:
    """Put up the fence; returns once no delivery to the mailbox is in flight."""
    folder(home, server).mkdir(mode=0o700, parents=True, exist_ok=True)
    with _flock(home, server, mailbox, fcntl.LOCK_EX):
        _write(home, server, mailbox, Fence(state, target, time.time()))


def lower_fence(home: Home, server: str, mailbox: str) -> None:
    path, _ = _paths(home, server, mailbox)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
