"""An in-memory MailboxStore and MailStore (server.store.api) for unit tests of what sits on
the store (the IMAP session, POP3, ...). tests/unit/store/test_store_fakes.py keeps it
honest about the contract its users rely on."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from server.protocols.imap import bodystructure
from server.store import api


@dataclass
class _Folder:
    uidvalidity: int
    special_use: str | None = None
    subscribed: bool = True
    hidden: bool = False
    uidnext: int = 1
    messages: dict[int, api.MessageRow] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    infos: dict[int, bodystructure.MessageInfo] = field(default_factory=dict)
    vanished: dict[int, int] = field(default_factory=dict)  # uid -> modseq of expunge
    recent: set[int] = field(default_factory=set)


class MemMailbox(api.MailboxStore):
    _uidvalidity = itertools.count(1000)

    def __init__(self, name: str = "alice") -> None:
        self.name = name
        self.modseq = 1
        self._folders: dict[str, _Folder] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._lost: set[str] = set()  # subscribed names that are not folders
        for folder, use in api.DEFAULT_FOLDERS.items():
            self.create_folder(folder, use)

    # -- helpers ----------------------------------------------------------------------
    def _key(self, folder: str) -> str:
        return "INBOX" if folder.upper() == "INBOX" else folder

    def _get(self, folder: str) -> _Folder:
        try:
            return self._folders[self._key(folder)]
        except KeyError:
            raise api.NoSuchFolder(f"Mailbox doesn't exist: {folder}") from None

    def _bump(self) -> int:
        self.modseq += 1
        return self.modseq

    def _notify(self) -> None:
        for cb in list(self._subscribers):
            cb()

    # -- folders ----------------------------------------------------------------------
    def folders(self) -> list[api.FolderInfo]:
        names = sorted(self._folders)
        return [
            api.FolderInfo(
                n,
                f.special_use,
                f.subscribed,
                any(o.startswith(n + "/") for o in names),
                f.hidden,
            )
            for n, f in self._folders.items()
        ]

    def status(self, folder: str) -> api.FolderStatus:
        f = self._get(folder)
        rows = f.messages.values()
        return api.FolderStatus(
            self._key(folder),
            f.uidvalidity,
            f.uidnext,
            self.modseq,
            len(f.messages),
            sum(1 for r in rows if "\\Seen" not in r.flags),
            len(f.recent),
            sum(r.size for r in rows),
            sum(1 for r in rows if "\\Deleted" in r.flags),
        )

    def create_folder(self, folder: str, special_use: str | None = None) -> None:
        key = self._key(folder)
        if not key or key.endswith("/") or "//" in key:
            raise api.InvalidFolderName(f"Invalid mailbox name: {folder}")
        if key in self._folders:
            raise api.FolderExists("Mailbox already exists")
        self._folders[key] = _Folder(next(self._uidvalidity), special_use)
        self._lost.discard(key)

    def delete_folder(self, folder: str) -> None:
        key = self._key(folder)
        self._get(key)
        if key == "INBOX":
            raise api.StoreError("INBOX cannot be deleted")
        if any(n.startswith(key + "/") for n in self._folders):
            raise api.FolderNotEmpty("Mailbox has children")
        if self._folders[key].subscribed:
            self._lost.add(key)
        del self._folders[key]
        self._notify()

    def rename_folder(self, old: str, new: str) -> None:
        old, new = self._key(old), self._key(new)
        src = self._get(old)
        if new in self._folders:
            raise api.FolderExists("Mailbox already exists")
        if old == "INBOX":
            self._folders[new] = _Folder(next(self._uidvalidity))
            for uid in sorted(src.messages):
                self.append(
                    new, src.bodies[uid], src.messages[uid].flags, src.messages[uid].internaldate
                )
            self.expunge("INBOX", None, force=True)
            return
        for name in [n for n in self._folders if n == old or n.startswith(old + "/")]:
            self._folders[new + name[len(old) :]] = self._folders.pop(name)
        self._notify()

    def set_subscribed(self, folder: str, subscribed: bool) -> None:
        key = self._key(folder)
        if key not in self._folders:
            (self._lost.add if subscribed else self._lost.discard)(key)
            return
        self._get(folder).subscribed = subscribed

    def lost_subscriptions(self) -> list[str]:
        return sorted(self._lost - set(self._folders))

    # -- messages ---------------------------------------------------------------------
    def snapshot(self, folder: str) -> api.FolderSnapshot:
        f = self._get(folder)
        return api.FolderSnapshot(self.status(folder), [f.messages[u] for u in sorted(f.messages)])

    def changes_since(self, folder: str, modseq: int) -> api.Changes:
        f = self._get(folder)
        return api.Changes(
            self.modseq,
            [f.messages[u] for u in sorted(f.messages) if f.messages[u].modseq > modseq],
            sorted(u for u, m in f.vanished.items() if m > modseq),
        )

    def append(
        self,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> api.AppendResult:
        f = self._get(folder)
        uid = f.uidnext
        f.uidnext += 1
        modseq = self._bump()
        date = internaldate or datetime.now(UTC).replace(microsecond=0)
        f.messages[uid] = api.MessageRow(uid, frozenset(flags), modseq, len(raw), date)
        f.bodies[uid] = raw
        f.infos[uid] = bodystructure.analyze(raw)
        f.recent.add(uid)
        self._notify()
        return api.AppendResult(f.uidvalidity, uid, modseq)

    def read(self, folder: str, uid: int) -> bytes:
        try:
            return self._get(folder).bodies[uid]
        except KeyError:
            raise api.StoreError("Message was expunged") from None

    def info(self, folder: str, uid: int) -> object:
        try:
            return self._get(folder).infos[uid]
        except KeyError:
            raise api.StoreError("Message was expunged") from None

    def set_flags(
        self,
        folder: str,
        uids: Sequence[int],
        op: api.FlagOp,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> api.FlagResult:
        f = self._get(folder)
        flags = frozenset(flags)
        changed, failed = [], []
        for uid in uids:
            row = f.messages.get(uid)
            if row is None:
                continue
            if unchangedsince is not None and row.modseq > unchangedsince:
                failed.append(uid)
                continue
            new = {"+": row.flags | flags, "-": row.flags - flags, "=": flags}[op]
            if new != row.flags or unchangedsince is not None:
                row = replace(row, flags=frozenset(new), modseq=self._bump())
                f.messages[uid] = row
                changed.append(row)
        if changed:
            self._notify()
        return api.FlagResult(changed, failed)

    def copy(self, folder: str, uids: Sequence[int], dest: str) -> api.CopyResult:
        f, d = self._get(folder), self._get(dest)
        mapping = []
        for uid in uids:
            if uid in f.messages:
                row = f.messages[uid]
                res = self.append(dest, f.bodies[uid], row.flags, row.internaldate)
                mapping.append((uid, res.uid))
        return api.CopyResult(d.uidvalidity, mapping)

    def move(self, folder: str, uids: Sequence[int], dest: str) -> api.CopyResult:
        result = self.copy(folder, uids, dest)
        self._remove(self._get(folder), [s for s, _ in result.mapping])
        return result

    def _remove(self, f: _Folder, uids: Iterable[int]) -> list[int]:
        gone = []
        for uid in uids:
            if f.messages.pop(uid, None) is not None:
                f.bodies.pop(uid)
                f.infos.pop(uid)
                f.recent.discard(uid)
                f.vanished[uid] = self._bump()
                gone.append(uid)
        if gone:
            self._notify()
        return gone

    def expunge(
        self, folder: str, uids: Sequence[int] | None = None, force: bool = False
    ) -> list[int]:
        f = self._get(folder)
        wanted = sorted(f.messages) if uids is None else sorted(set(uids))
        return self._remove(
            f,
            [
                u
                for u in wanted
                if u in f.messages and (force or "\\Deleted" in f.messages[u].flags)
            ],
        )

    def claim_recent(self, folder: str) -> set[int]:
        f = self._get(folder)
        got, f.recent = f.recent, set()
        return got

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def lock_maildrop(self) -> Callable[[], None]:
        return lambda: None


class MemStore(api.MailStore):
    def __init__(self) -> None:
        self.boxes: dict[str, MemMailbox] = {}

    def mailbox(self, name: str) -> MemMailbox:
        return self.boxes.setdefault(name.lower(), MemMailbox(name))

    def opened(self, name: str) -> MemMailbox | None:
        return self.boxes.get(name.lower())

    def delete_mailbox(self, name: str) -> None:
        self.boxes.pop(name.lower(), None)

    def check(self) -> list[str]:
        return []

    def close(self) -> None:
        pass
