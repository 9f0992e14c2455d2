"""Move requests (New-/Get-/Remove-/Resume-MoveRequest): what is asked, where it stands, and
the state machine between. One request per mailbox, one JSON file each in the home's moves/
folder, written under a lock by mailctl (create, resume, remove) and by the target server's
MSExchangeMailboxReplication (progress); the copy's own bookkeeping stays on the target
(server/moves/copier.py).

Statuses are Exchange's (Get-MoveRequest's Status):

    Queued --start--> InProgress --lock--> CompletionInProgress --complete--> Completed
                       ^                      |  (start again after a stop before the switch)
                       |    ^                 |                  \\--warn--> CompletedWithWarning
                       |    |                 \\--fail (before the switch)--> Failed
                       |    resume
                       |    |
                       +--ready (SuspendWhenReadyToComplete)--> AutoSuspended
                       \\--fail--> Failed --resume--> Queued

Remove-MoveRequest takes a request away in any status but CompletionInProgress (the switch
is short and must not be cut in two); removing one InProgress cancels the copy."""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.settings.paths import Home
from server.store.usage import mailbox_key


class MoveStatus(enum.StrEnum):
    Queued = "Queued"
    InProgress = "InProgress"
    AutoSuspended = "AutoSuspended"
    CompletionInProgress = "CompletionInProgress"
    Completed = "Completed"
    CompletedWithWarning = "CompletedWithWarning"
    Failed = "Failed"


class MoveStateError(Exception):
    """A change the request's status does not allow; the message says why."""


DONE = (MoveStatus.Completed, MoveStatus.CompletedWithWarning)
# What the replication service works on.
ACTIVE = (MoveStatus.Queued, MoveStatus.InProgress, MoveStatus.CompletionInProgress)

# event -> (statuses it may happen in, status after)
TRANSITIONS: dict[str, tuple[tuple[MoveStatus, ...], MoveStatus]] = {
    # From CompletionInProgress: a service stopped during the final phase, before the
    # switch, goes through it again at its next start.
    "start": (
        (MoveStatus.Queued, MoveStatus.InProgress, MoveStatus.CompletionInProgress),
        MoveStatus.InProgress,
    ),
    "ready": ((MoveStatus.InProgress,), MoveStatus.AutoSuspended),
    "lock": ((MoveStatus.InProgress,), MoveStatus.CompletionInProgress),
    "complete": ((MoveStatus.CompletionInProgress,), MoveStatus.Completed),
    "warn": ((MoveStatus.CompletionInProgress,), MoveStatus.CompletedWithWarning),
    "fail": (
        (MoveStatus.Queued, MoveStatus.InProgress, MoveStatus.CompletionInProgress),
        MoveStatus.Failed,
    ),
    "resume": ((MoveStatus.Failed, MoveStatus.AutoSuspended), MoveStatus.Queued),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class MoveRequest:
    Identity: str  # the mailbox's name
    SourceDatabase: str  # the server the mailbox was on when the request was made
    TargetDatabase: str
    Status: MoveStatus = MoveStatus.Queued
    StatusDetail: str = "Queued"
    SuspendWhenReadyToComplete: bool = False
    # Set when the directory was switched: from then on the move cannot be undone, only
    # finished (a failure after it leaves CompletedWithWarning, never Failed).
    Switched: bool = False
    PercentComplete: int = 0
    TotalMailboxItemCount: int = 0
    TotalMailboxSize: int = 0  # octets on the source at the last pass
    ItemsTransferred: int = 0
    BytesTransferred: int = 0
    Passes: int = 0
    QueuedTimestamp: str = field(default_factory=_now)
    StartTimestamp: str | None = None
    CompletionTimestamp: str | None = None
    Message: str = ""
    FailureType: str | None = None
    Attempt: int = 1  # a resume starts the next attempt; the copy keeps its work
    # Seconds the mailbox was fenced: from the lock to the switch (Exchange's name).
    TotalFinalizationDuration: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, MoveStatus) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MoveRequest:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["Status"] = MoveStatus(known.get("Status", "Queued"))
        return cls(**known)


def transition(request: MoveRequest, event: str, **changes: Any) -> MoveRequest:
    """The request after `event`, with `changes` applied; MoveStateError when its status
    does not allow the event."""
    try:
        allowed, after = TRANSITIONS[event]
    except KeyError:
        raise MoveStateError(f"unknown move event {event!r}") from None
    if request.Status not in allowed:
        raise MoveStateError(
            f"the move request for {request.Identity} is {request.Status}; "
            f"{event} needs {' or '.join(allowed)}"
        )
    if event == "fail" and request.Switched:
        raise MoveStateError(f"the move of {request.Identity} has switched; it cannot fail now")
    extra: dict[str, Any] = {"Status": after, "StatusDetail": changes.pop("StatusDetail", after)}
    if event == "start" and request.StartTimestamp is None:
        extra["StartTimestamp"] = _now()
    if event in ("complete", "warn"):
        extra["CompletionTimestamp"] = _now()
        extra["PercentComplete"] = 100
    if event == "resume":
        extra.update(Message="", FailureType=None, Attempt=request.Attempt + 1)
        extra["SuspendWhenReadyToComplete"] = False
    return replace(request, **extra, **changes)


def removable(request: MoveRequest) -> str | None:
    """Why Remove-MoveRequest must refuse (None: it may remove)."""
    if request.Status == MoveStatus.CompletionInProgress:
        return (
            f"the move of {request.Identity} is switching the mailbox to "
            f"{request.TargetDatabase}; remove the request once it has completed"
        )
    return None


def percent(copied_items: int, total_items: int, passes: int) -> int:
    """Exchange's PercentComplete: the initial copy counts to 95; the final pass and the
    switch are the rest."""
    if total_items <= 0:
        return 95 if passes else 0
    return min(95, (95 * copied_items) // total_items)


class RequestBook:
    """The move requests of an organization: home/moves/<mailbox key>.json."""

    def __init__(self, home: Home) -> None:
        self.folder = home.root / "moves"

    def _path(self, name: str) -> Path:
        return self.folder / f"{mailbox_key(name)}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, name: str) -> MoveRequest | None:
        try:
            return MoveRequest.from_json(json.loads(self._path(name).read_text("utf-8")))
        except FileNotFoundError:
            return None

    def all(self) -> list[MoveRequest]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
                out.append(MoveRequest.from_json(json.loads(path.read_text("utf-8"))))
        return sorted(out, key=lambda r: r.Identity.lower())

    def put(self, request: MoveRequest) -> None:
        """Write (call under locked())."""
        path = self._path(request.Identity)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(request.to_json(), indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def create(self, request: MoveRequest) -> None:
        with self.locked():
            old = self.get(request.Identity)
            if old is not None:
                raise MoveStateError(
                    f"there is already a move request for {request.Identity} ({old.Status}); "
                    "remove it first (Remove-MoveRequest)"
                )
            self.put(request)

    def update(self, name: str, event: str | None = None, **changes: Any) -> MoveRequest:
        """Apply an event (or only `changes`) to the stored request and write it back.
        MoveStateError when it is gone (removed) or its status does not allow the event."""
        with self.locked():
            request = self.get(name)
            if request is None:
                raise MoveStateError(f"the move request for {name} was removed")
            request = (
                transition(request, event, **changes) if event else replace(request, **changes)
            )
            self.put(request)
            return request

    def remove(self, name: str) -> MoveRequest:
        with self.locked():
            request = self.get(name)
            if request is None:
                raise MoveStateError(f"there is no move request for {name}")
            why = removable(request)
            if why is not None:
                raise MoveStateError(why)
            self._path(name).unlink()
            return request
