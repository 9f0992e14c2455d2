"""The submission spool: every accepted message is on disk before the client hears 250.

Layout: <home>/queue/<server>/<id>.eml (the message, CRLF, Received header included) and
<id>.json (envelope and per-recipient state). The .eml is written and fsync'd first, then the
.json atomically; a message exists for the queue only once its .json does, so a crash between
the two leaves an orphan .eml that was never acknowledged and is removed at start.

Delivery (delivery.py) takes recipients off an entry as they succeed and rewrites the .json;
the files go when no recipient is left. After a restart the service loads every entry and
carries on, so nothing accepted with 250 is lost.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..settings.store import atomic_write


@dataclass
class Recipient:
    address: str
    mailbox: str | None = None  # local mailbox name; None for mail to other domains
    server: str | None = None  # the server holding the local mailbox
    attempts: int = 0
    next_try: float = 0.0  # time.time() of the next attempt
    last_error: str = ""


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

    def add(self, mail_from: str, recipients: list[Recipient], message: bytes,
            sender_mailbox: str | None = None) -> QueueEntry:
        """Write a message durably (blocking: call from a thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = QueueEntry(
            id=f"{int(time.time() * 1000):013d}-{secrets.token_hex(6)}",
            mail_from=mail_from, recipients=recipients, sender_mailbox=sender_mailbox,
        )
        eml, meta = self._paths(entry.id)
        with open(eml, "wb") as f:
            f.write(message)
            f.flush()
            os.fsync(f.fileno())
        atomic_write(meta, entry.to_json(), mode=0o600)
        return entry

    def update(self, entry: QueueEntry) -> None:
        """Persist progress; removes the entry when no recipient is left."""
        eml, meta = self._paths(entry.id)
        if not entry.recipients:
            meta.unlink(missing_ok=True)
            eml.unlink(missing_ok=True)
            return
        atomic_write(meta, entry.to_json(), mode=0o600)

    def message(self, entry: QueueEntry) -> bytes:
        return self._paths(entry.id)[0].read_bytes()

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
        for eml in self.folder.glob("*.eml"):
            if eml.stem not in committed and not (self.folder / f"{eml.stem}.json").exists():
                eml.unlink(missing_ok=True)
        return entries
