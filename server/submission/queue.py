"""The submission spool: every accepted message is on disk before the client hears 250.

Layout: <home>/queue/<server>/<id>.eml (the message, CRLF, Received header included) and
<id>.json (envelope and per-recipient state). The .eml is written and fsync'd first, then the
.json atomically; a message exists for the queue only once its .json does, so a crash between
the two leaves an orphan .eml that was never acknowledged and is removed at start.

Delivery (delivery.py) takes recipients off an entry as they succeed and rewrites the .json;
the files go when no recipient is left. After a restart the service loads every entry and
carries on, so nothing accepted with 250 is lost.

Other processes write entries too (read receipts from the back ends, server.retrieval); the
running service learns of them from SpoolWatcher, which wakes only when the kernel reports a
new or replaced .json file (inotify), so an idle queue costs nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from server.runtime.filemodes import private_dir
from server.runtime.reload import FolderWatch
from server.settings.store import atomic_write

# An .eml without its .json is removed at load only once it is this old: younger, it may be
# another process's add() between writing the message and committing the entry.
ORPHAN_GRACE = 300.0


@dataclass
class Recipient:
    address: str
    mailbox: str | None = None  # local mailbox name; None for mail to other domains
    server: str | None = None  # the server holding the local mailbox
    attempts: int = 0
    next_try: float = 0.0  # time.time() of the next attempt
    last_error: str = ""
    # No longer written: MSExchangeDelivery remembers deliveries per entry itself
    # (server/delivery/ledger.py). Kept so entries spooled by an older version still load.
    delivering_from_uid: int | None = None


@dataclass
class QueueEntry:
    id: str
    mail_from: str
    recipients: list[Recipient]
    received: float = field(default_factory=time.time)
    sender_mailbox: str | None = None  # the authenticated mailbox (for bounces)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> QueueEntry:
        raw = json.loads(data)
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _paths(self, entry_id: str) -> tuple[Path, Path]:
        return self.folder / f"{entry_id}.eml", self.folder / f"{entry_id}.json"

    def add(
        self,
        mail_from: str,
        recipients: list[Recipient],
        message: bytes,
        sender_mailbox: str | None = None,
    ) -> QueueEntry:
        """Write a message durably (blocking: call from a thread)."""
        spooled = self.create()
        try:
            spooled.write(message)
            return spooled.commit(mail_from, recipients, sender_mailbox)
        finally:
            spooled.discard()

    def create(self) -> SpoolFile:
        """A new entry's message file, to be written as the message arrives and then
        committed (or discarded): a message being received costs disk, not memory."""
        private_dir(self.folder)
        entry_id = f"{int(time.time() * 1000):013d}-{secrets.token_hex(6)}"
        return SpoolFile(self, entry_id, _open_private(self._paths(entry_id)[0]))

    def update(self, entry: QueueEntry) -> None:
        """Persist progress; removes the entry when no recipient is left."""
        eml, meta = self._paths(entry.id)
        if not entry.recipients:
            meta.unlink(missing_ok=True)
            eml.unlink(missing_ok=True)
            return
        atomic_write(meta, entry.to_json(), mode=0o600)

    def message(self, entry: QueueEntry) -> bytes:
        """The spooled message; FileNotFoundError once the entry is gone."""
        return self._paths(entry.id)[0].read_bytes()

    def entry(self, entry_id: str) -> QueueEntry | None:
        """One committed entry as it is on disk now; None when gone or unreadable."""
        try:
            return QueueEntry.from_json(self._paths(entry_id)[1].read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def load(self) -> list[QueueEntry]:
        """Every committed entry, oldest first; orphan .eml files are removed."""
        if not self.folder.exists():
            return []
        entries = []
        committed = set()
        for meta in sorted(self.folder.glob("*.json")):
            try:
                entries.append(QueueEntry.from_json(meta.read_bytes()))
                committed.add(meta.stem)
            except (ValueError, TypeError, KeyError):
                continue  # a damaged entry stays on disk for the admin to look at
        old = time.time() - ORPHAN_GRACE
        for eml in self.folder.glob("*.eml"):
            if eml.stem in committed or (self.folder / f"{eml.stem}.json").exists():
                continue
            try:
                if eml.stat().st_mtime < old:
                    eml.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        return entries


class SpoolFile:
    """The message file of an entry not committed yet (Spool.create)."""

    def __init__(self, spool: Spool, entry_id: str, file: BinaryIO) -> None:
        self.spool, self.id, self._file = spool, entry_id, file
        self.size = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(
        self, mail_from: str, recipients: list[Recipient], sender_mailbox: str | None = None
    ) -> QueueEntry:
        """fsync the message, then write the entry: from here on it is queued (blocking)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        entry = QueueEntry(
            id=self.id, mail_from=mail_from, recipients=recipients, sender_mailbox=sender_mailbox
        )
        atomic_write(self.spool._paths(self.id)[1], entry.to_json(), mode=0o600)
        self.committed = True
        return entry

    def discard(self) -> None:
        """Forget an uncommitted message (no-op once committed)."""
        if self.committed:
            return
        self._file.close()
        self.spool._paths(self.id)[0].unlink(missing_ok=True)


def entry_id_of(path: Path) -> str | None:
    """The entry a spool file event is about: committed entries are `<id>.json` (temporary
    files of atomic_write start with a dot)."""
    name = path.name
    if name.startswith(".") or not name.endswith(".json"):
        return None
    return name[: -len(".json")]


class SpoolWatcher:
    """Calls `on_entries(ids)` on the event loop when entries are written to (or removed
    from) the spool folder by any process. inotify where there is one; elsewhere
    watchfiles, which polls."""

    def __init__(self, folder: Path, on_entries: Callable[[set[str]], None]) -> None:
        self.folder = folder
        self.on_entries = on_entries
        self._watch = FolderWatch(self._report)

    async def start(self) -> None:
        private_dir(self.folder)
        await self._watch.start(self.folder)

    def _report(self, paths: list[Path]) -> None:
        ids = {i for i in map(entry_id_of, paths) if i is not None}
        if ids:
            self.on_entries(ids)

    def close(self) -> None:
        self._watch.close()


def _open_private(path: Path) -> BinaryIO:
    """A new spool file that only the service account can read, whatever the umask
    (filemodes): it holds a whole message."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return open(fd, "wb")  # noqa: SIM115
