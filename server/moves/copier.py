"""The copy of one mailbox, pass by pass, from a source reader into the target's store.

The first pass copies every folder and message; each later pass copies only what changed
since the MODSEQ the previous pass reached in each folder (CONDSTORE's changes_since: new
messages, changed flags, expunged UIDs), so passes get short while the user keeps working.
The final pass runs the same code with the source fenced (server/moves/fence.py).

What carries over: folders with their SPECIAL-USE and subscription, messages byte for byte,
flags and keywords, INTERNALDATE. UIDs and UIDVALIDITY do not: the store's API gives the
target store the numbering (append() assigns UIDs, a new folder gets a new UIDVALIDITY, and
identities are never reused - docs/architecture.md), so every folder reaches its clients
with a new UIDVALIDITY, which tells them (RFC 3501 2.3.1.1) to drop what they cached and
fetch the folder again, rather than take new UIDs for old messages. POP3 UIDLs, which are
the IMAP UIDs, change likewise. Carrying the numbers needs a store call that appends under
given UIDs, which the store split (server/store/sqlite/) can add.

The mapping of source to target UIDs, per folder, is kept on the target
(data/<Target>/moves/<mailbox>.copy.json) after every pass, so a resumed move goes on from
the last completed pass; a pass cut off half-way is repeated from its start, and the target
copy is discarded first because its appends were not all recorded."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from server.store.api import (
    FolderExists,
    MailboxStore,
    NewMessage,
    NoSuchFolder,
    StoreError,
)

READ_BATCH = 64  # messages per read from the source
READ_BATCH_OCTETS = 16 << 20
SKIP_FLAGS = {"\\recent"}  # per session, never stored


@dataclass(frozen=True)
class SourceFolder:
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int
    highestmodseq: int
    messages: int
    size: int


@dataclass(frozen=True)
class SourceRow:
    uid: int
    flags: tuple[str, ...]
    size: int
    internaldate: datetime


@dataclass(frozen=True)
class SourceChanges:
    uidvalidity: int
    highestmodseq: int
    rows: list[SourceRow]  # new or changed since the MODSEQ asked for, ascending UID
    vanished: list[int]


class SourceReader(Protocol):
    """The source mailbox as the mover sees it: through the source server's own
    replication service (server/moves/service.py), or a store in tests."""

    def folders(self) -> list[SourceFolder]: ...

    def changes(self, folder: str, modseq: int) -> SourceChanges: ...

    def read(self, folder: str, uids: list[int]) -> dict[int, bytes]:
        """The messages among `uids` that still exist."""
        ...


class StoreSource:
    """A SourceReader over a MailboxStore: what the source server's replication service
    answers with, and what unit tests read from."""

    def __init__(self, box: MailboxStore) -> None:
        self.box = box

    def folders(self) -> list[SourceFolder]:
        out = []
        for info in self.box.folders():
            try:
                status = self.box.status(info.name)
            except NoSuchFolder:
                continue  # \Noselect, or deleted since the listing
            out.append(
                SourceFolder(
                    info.name,
                    info.special_use,
                    info.subscribed,
                    status.uidvalidity,
                    status.highestmodseq,
                    status.messages,
                    status.size,
                )
            )
        return out

    def changes(self, folder: str, modseq: int) -> SourceChanges:
        status = self.box.status(folder)
        if modseq <= 0:
            snapshot = self.box.snapshot(folder)
            rows, vanished, highest = snapshot.rows, [], snapshot.status.highestmodseq
        else:
            changes = self.box.changes_since(folder, modseq)
            rows, vanished, highest = changes.changed, changes.vanished, changes.highestmodseq
        return SourceChanges(
            status.uidvalidity,
            highest,
            [SourceRow(r.uid, tuple(sorted(r.flags)), r.size, r.internaldate) for r in rows],
            list(vanished),
        )

    def read(self, folder: str, uids: list[int]) -> dict[int, bytes]:
        out = {}
        for uid in uids:
            try:
                out[uid] = self.box.read(folder, uid)
            except StoreError:
                continue  # expunged since the listing: the next pass sees it vanish
        return out


@dataclass
class FolderCopy:
    uidvalidity: int  # the source folder's
    modseq: int = 0  # the source's HIGHESTMODSEQ this copy has caught up with
    uids: dict[int, int] = field(default_factory=dict)  # source UID -> target UID


@dataclass
class CopyState:
    folders: dict[str, FolderCopy] = field(default_factory=dict)
    passes: int = 0
    items: int = 0  # messages copied so far (all passes)
    octets: int = 0
    totals: tuple[int, int] = (0, 0)  # (messages, octets) on the source at the last pass

    def to_json(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "items": self.items,
            "octets": self.octets,
            "folders": {
                name: {
                    "uidvalidity": f.uidvalidity,
                    "modseq": f.modseq,
                    "uids": [[s, t] for s, t in sorted(f.uids.items())],
                }
                for name, f in self.folders.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CopyState:
        folders: dict[str, Any] = data.get("folders") or {}
        return cls(
            {
                str(name): FolderCopy(
                    int(f["uidvalidity"]),
                    int(f["modseq"]),
                    {int(s): int(t) for s, t in f["uids"]},
                )
                for name, f in folders.items()
            },
            int(data.get("passes") or 0),
            int(data.get("items") or 0),
            int(data.get("octets") or 0),
        )


def load_state(path: Path) -> CopyState | None:
    """The state of the last completed pass; None when there is none (or it is unusable,
    and the copy starts over)."""
    try:
        return CopyState.from_json(json.loads(path.read_text("utf-8")))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def save_state(path: Path, state: CopyState) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(state.to_json()).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


Progress = Callable[[CopyState], None]


class Copier:
    def __init__(
        self,
        source: SourceReader,
        target: MailboxStore,
        state: CopyState | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.state = state or CopyState()
        self.progress = progress or (lambda _state: None)

    def run_pass(self) -> int:
        """Bring the target up to the source as it is now; the number of changes applied
        (messages copied, flag changes, expunges, folders made or removed)."""
        applied = 0
        folders = sorted(self.source.folders(), key=lambda f: f.name)
        self.state.totals = (sum(f.messages for f in folders), sum(f.size for f in folders))
        names = {f.name for f in folders}
        for gone in sorted(set(self.state.folders) - names, reverse=True):
            applied += self._drop_folder(gone)
        for folder in folders:
            applied += self._sync_folder(folder)
        self.state.passes += 1
        self.progress(self.state)
        return applied

    # --- folders ------------------------------------------------------------------------
    def _drop_folder(self, name: str) -> int:
        del self.state.folders[name]
        if name.upper() == "INBOX":
            return 0
        try:
            self.target.delete_folder(name)
        except NoSuchFolder:
            pass
        except StoreError:
            # Children still there (they go first, in reverse order) or \Noselect: empty it.
            uids = [r.uid for r in self.target.snapshot(name).rows]
            if uids:
                self.target.delete_messages(name, uids)
        return 1

    def _ensure_folder(self, folder: SourceFolder) -> int:
        made = 0
        try:
            self.target.create_folder(folder.name, folder.special_use)
            made = 1
        except FolderExists:
            pass
        mine = {f.name: f for f in self.target.folders()}.get(folder.name)
        if mine is not None and mine.subscribed != folder.subscribed:
            self.target.set_subscribed(folder.name, folder.subscribed)
        return made

    def _sync_folder(self, folder: SourceFolder) -> int:
        applied = 0
        copy = self.state.folders.get(folder.name)
        if copy is not None and copy.uidvalidity != folder.uidvalidity:
            # Deleted and made again on the source under the same name: another folder.
            applied += self._drop_folder(folder.name)
            copy = None
        if copy is None:
            applied += self._ensure_folder(folder)
            copy = self.state.folders[folder.name] = FolderCopy(folder.uidvalidity)
        elif copy.modseq >= folder.highestmodseq:
            return applied  # nothing changed there since the last pass
        changes = self.source.changes(folder.name, copy.modseq)
        if changes.uidvalidity != copy.uidvalidity:
            return applied  # replaced between the listing and now: the next pass sees it
        gone = [copy.uids.pop(uid) for uid in changes.vanished if uid in copy.uids]
        if gone:
            self.target.delete_messages(folder.name, gone)
            applied += len(gone)
        new = [r for r in changes.rows if r.uid not in copy.uids]
        applied += self._set_flags(
            folder.name, copy, [r for r in changes.rows if r.uid in copy.uids]
        )
        for batch in _batches(new):
            applied += self._copy(folder.name, copy, batch)
        copy.modseq = changes.highestmodseq
        return applied

    # --- messages -----------------------------------------------------------------------
    def _set_flags(self, folder: str, copy: FolderCopy, rows: list[SourceRow]) -> int:
        by_flags: dict[tuple[str, ...], list[int]] = {}
        for row in rows:
            by_flags.setdefault(_flags(row.flags), []).append(copy.uids[row.uid])
        for flags, uids in by_flags.items():
            self.target.set_flags(folder, uids, "=", flags)
        return len(rows)

    def _copy(self, folder: str, copy: FolderCopy, rows: list[SourceRow]) -> int:
        bodies = self.source.read(folder, [r.uid for r in rows])
        present = [r for r in rows if r.uid in bodies]
        if not present:
            return 0
        results = self.target.append_many(
            folder,
            [NewMessage(bodies[r.uid], _flags(r.flags), r.internaldate) for r in present],
        )
        for row, result in zip(present, results, strict=True):
            copy.uids[row.uid] = result.uid
        self.state.items += len(present)
        self.state.octets += sum(len(bodies[r.uid]) for r in present)
        self.progress(self.state)
        return len(present)


def _flags(flags: Iterable[str]) -> tuple[str, ...]:
    return tuple(f for f in flags if f.lower() not in SKIP_FLAGS)


def _batches(rows: list[SourceRow]) -> Iterable[list[SourceRow]]:
    batch: list[SourceRow] = []
    octets = 0
    for row in rows:
        if batch and (len(batch) >= READ_BATCH or octets + row.size > READ_BATCH_OCTETS):
            yield batch
            batch, octets = [], 0
        batch.append(row)
        octets += row.size
    if batch:
        yield batch
