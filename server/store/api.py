"""The mailbox store contract: what the IMAP and POP3 back ends and delivery call.

One `MailStore` per back-end server (its mailbox database folder, data/<Server>/). It hands
out a `MailboxStore` per user mailbox. Every method is synchronous and thread-safe; methods
that write fsync before they return, so the caller may tell the client "OK" right after, and
servers call the writing ones through `asyncio.to_thread` so a slow disk never stalls the
event loop. Every committed change wakes the subscribers of that mailbox in every process
(see `subscribe`), within milliseconds, with no polling.

Folder names are the IMAP names in UTF-8 (the IMAP layer converts modified UTF-7), with "/"
as the hierarchy delimiter; "INBOX" is case-insensitive.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

DELIMITER = "/"

# Exchange's default folders and their RFC 6154 SPECIAL-USE attributes.
DEFAULT_FOLDERS: dict[str, str | None] = {
    "INBOX": None,
    "Sent Items": "\\Sent",
    "Drafts": "\\Drafts",
    "Deleted Items": "\\Trash",
    "Junk Email": "\\Junk",
    "Archive": "\\Archive",
}


def normalize_folder(name: str) -> str:
    """INBOX is case-insensitive, also as the first level of a hierarchy."""
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


class StoreError(Exception):
    """Base of the store's errors; the message is fit to show to a client."""


class NoSuchFolder(StoreError):
    pass


class OverQuota(StoreError):
    """A write that would take the mailbox past its limit (append_many's `room`)."""


class FolderExists(StoreError):
    pass


class FolderNotEmpty(StoreError):
    """Deleting a folder that has children and is not \\Noselect (RFC 3501 6.3.4)."""


class InvalidFolderName(StoreError):
    pass


class MailboxInUse(StoreError):
    """The POP3 maildrop lock is held by another session."""


@dataclass(frozen=True)
class FolderInfo:
    name: str
    special_use: str | None  # "\\Sent", ... or None
    subscribed: bool
    has_children: bool
    hidden: bool = False  # shown only with ShowHiddenFoldersEnabled


@dataclass(frozen=True)
class FolderStatus:
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    recent: int
    size: int  # total octets (STATUS=SIZE, RFC 8438)
    deleted: int  # messages flagged \Deleted


@dataclass(frozen=True)
class MessageRow:
    """What a session keeps per message of the selected folder."""

    uid: int
    flags: frozenset[str]  # system flags with backslash ("\\Seen") and keywords
    modseq: int
    size: int  # exact octets of the stored (CRLF) message
    internaldate: datetime  # aware


@dataclass(frozen=True)
class FolderSnapshot:
    status: FolderStatus
    rows: list[MessageRow]  # ascending UID = ascending sequence number


@dataclass(frozen=True)
class Changes:
    """What changed in a folder since a MODSEQ (CONDSTORE/QRESYNC, and IDLE updates)."""

    highestmodseq: int
    changed: list[MessageRow]  # new or with changed flags, ascending UID
    vanished: list[int] = field(default_factory=list)  # expunged UIDs, ascending
    # The folder's UIDVALIDITY (None: not told). Folders are found by name, so a reader
    # that knew another UIDVALIDITY is looking at a folder deleted (or renamed away) and
    # created again under that name: none of its UIDs name the messages it knew.
    uidvalidity: int | None = None


@dataclass(frozen=True)
class AppendResult:
    uidvalidity: int
    uid: int
    modseq: int


@dataclass(frozen=True)
class CopyResult:
    uidvalidity: int  # of the destination
    mapping: list[tuple[int, int]]  # (source UID, destination UID)


@dataclass(frozen=True)
class FlagResult:
    changed: list[MessageRow]  # rows whose flags changed, with their new MODSEQ
    failed: list[int] = field(default_factory=list)  # UIDs skipped by UNCHANGEDSINCE


class BodyWriter:
    """A message body written as it arrives (an APPEND literal streamed from the client),
    handed to append()/append_many() as the message's `raw` once complete. The store
    takes it over when the append commits; until then discard() throws it away (and is
    harmless after the commit). This default keeps the bytes in memory, for stores that
    keep no files; the SQLite store writes them straight into the file that becomes the
    message's body (MailboxStore.new_body)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.taken = False

    @property
    def size(self) -> int:
        return len(self._data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes written, a piece at a time (to copy them without holding them)."""
        for i in range(0, len(self._data), size):
            yield bytes(self._data[i : i + size])

    def read(self) -> bytes:
        return bytes(self._data)

    def discard(self) -> None:
        if not self.taken:
            self._data = bytearray()


@dataclass(frozen=True)
class NewMessage:
    """One message for MailboxStore.append_many(). `lf` marks bytes an importer converted
    from bare LF line ends, so an export can give the original bytes back. `raw` may be a
    BodyWriter from new_body() (a streamed message: no copy of it is made in memory)."""

    raw: bytes | BodyWriter
    flags: Iterable[str] = ()
    internaldate: datetime | None = None
    lf: bool = False


FlagOp = Literal["+", "-", "="]


class MessageSource(NamedTuple):
    """One message in MailboxStore.message_sources(), each field None when not asked for
    or not available. A tuple (FETCH builds thousands of these per command), so callers
    may unpack it as (path, header, info)."""

    #: The message's file (see MailboxStore.body_paths); None for a store without files,
    #: whose callers read() instead. Read it with read_body(), never by hand.
    path: str | None
    #: The top-level header block, the blank line included (MessageInfo.header_len octets).
    header: bytes | None
    #: The message's server.protocols.imap.bodystructure.MessageInfo.
    info: object | None


def read_body(path: str | os.PathLike[str], uid: int) -> bytes:
    """The message file `path` (a MessageSource.path or a body_paths() value) in one read;
    StoreError when it is gone: the message (UID `uid`) was expunged since the lookup."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StoreError(f"Message UID {uid} no longer exists.") from None
    try:
        return read_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def read_fd(fd: int, size: int) -> bytes:
    """Up to `size` bytes of an open message file, in one read unless the file is large."""
    data = os.read(fd, size)
    while len(data) < size:  # a short read: only for very large files
        more = os.read(fd, size - len(data))
        if not more:
            break
        data += more
    return data


def open_body(path: str | os.PathLike[str], uid: int) -> BinaryIO:
    """The message file `path` open for reading a piece at a time (unbuffered: the caller
    reads pieces big enough); StoreError when the message (UID `uid`) is gone."""
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise StoreError(f"Message UID {uid} no longer exists.") from None


class MailboxStore(ABC):
    """One user's mailbox."""

    name: str

    # --- folders -----------------------------------------------------------------
    @abstractmethod
    def folders(self) -> list[FolderInfo]: ...

    @abstractmethod
    def status(self, folder: str) -> FolderStatus: ...

    @abstractmethod
    def create_folder(self, folder: str, special_use: str | None = None) -> None: ...

    @abstractmethod
    def delete_folder(self, folder: str) -> None: ...

    @abstractmethod
    def rename_folder(self, old: str, new: str) -> None:
        """Renaming INBOX moves its messages to the new folder (RFC 3501 6.3.5)."""

    @abstractmethod
    def set_subscribed(self, folder: str, subscribed: bool) -> None: ...

    def lost_subscriptions(self) -> list[str]:
        """Subscribed names that are not folders: DELETE does not unsubscribe (RFC 3501
        6.3.6), and set_subscribed() may name a folder that does not exist (yet); creating
        it again brings the subscription back."""
        return []

    # --- messages ----------------------------------------------------------------
    @abstractmethod
    def snapshot(self, folder: str) -> FolderSnapshot: ...

    def cached_size(self, folder: str) -> int | None:
        """How many messages the folder had when this process last listed it, when that
        list is kept and snapshot() only brings it up to date (cheap); None otherwise."""
        return None

    @abstractmethod
    def changes_since(self, folder: str, modseq: int) -> Changes: ...

    @abstractmethod
    def append(
        self,
        folder: str,
        raw: bytes | BodyWriter,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> AppendResult:
        """Store a message (bytes kept as given; callers hand CRLF line ends)."""

    def usage_totals(self) -> tuple[int, int]:
        """Messages and octets in every folder (what quotas are checked against). This
        default asks each folder's status; the SQLite store keeps the sums."""
        items = size = 0
        for folder in self.folders():
            status = self.status(folder.name)
            items += status.messages
            size += status.size
        return items, size

    def append_many(
        self, folder: str, messages: Iterable[NewMessage], room: int | None = None
    ) -> list[AppendResult]:
        """Store several messages at once (MULTIAPPEND, RFC 3502; imports). The SQLite store
        does it in one transaction: all or nothing, one MODSEQ, one fsync round. With
        `room`, OverQuota instead when the mailbox's octets and the new ones pass it."""
        messages = list(messages)
        if room is not None:
            incoming = sum(
                m.raw.size if isinstance(m.raw, BodyWriter) else len(m.raw) for m in messages
            )
            if self.usage_totals()[1] + incoming > room:
                raise OverQuota("Quota exceeded")
        return [
            self.append(
                folder,
                m.raw.read() if isinstance(m.raw, BodyWriter) else m.raw,
                m.flags,
                m.internaldate,
            )
            for m in messages
        ]

    def new_body(self) -> BodyWriter:
        """Somewhere to write a message body as it arrives, for append()/append_many()."""
        return BodyWriter()

    @abstractmethod
    def read(self, folder: str, uid: int) -> bytes:
        """The stored message. Raises StoreError for an expunged UID."""

    def body_paths(self, folder: str, uids: Sequence[int]) -> dict[int, Path]:
        """The files holding the messages among `uids` that exist, in one lookup, for
        readers of many messages (a POP3 session takes its whole maildrop at login). A
        file never changes and is removed once no message uses it, so opening it later
        either gives the message or FileNotFoundError. Stores that don't keep messages
        as files return {}: callers then read()."""
        return {}

    def message_sources(
        self,
        folder: str,
        uids: Sequence[int],
        header: bool = False,
        info: bool = False,
        uidvalidity: int | None = None,
    ) -> dict[int, MessageSource]:
        """What FETCH needs of many messages, in one lookup: for each message among `uids`
        that exists, (path of its file or None, its header block or None, its MessageInfo
        or None). The header block (the message's first `MessageInfo.header_len` octets,
        the blank line included) comes only with `header`, the MessageInfo only with
        `info`. The path follows body_paths(): the file never changes, and opening it later
        gives the message or FileNotFoundError. With `uidvalidity`, only a folder that
        still has it answers (else {}: a folder of that name created since is another
        folder, whose UIDs name other messages). This default, for stores that keep no
        header blocks, reads each message."""
        if uidvalidity is not None and self.status(folder).uidvalidity != uidvalidity:
            return {}
        paths = self.body_paths(folder, uids)
        out: dict[int, MessageSource] = {}
        for uid in uids:
            try:
                meta = self.info(folder, uid)
                head = self.read(folder, uid)[: meta.header_len] if header else None  # type: ignore[attr-defined]
            except StoreError:
                continue
            path = paths.get(uid)
            out[uid] = MessageSource(
                str(path) if path is not None else None, head, meta if info else None
            )
        return out

    def sort_keys(
        self, folder: str, uids: Sequence[int], fields: Sequence[str] | None = None
    ) -> dict[int, object]:
        """The SORT/THREAD keys (server.protocols.imap.sortthread.SortKeys) of the messages
        among `uids` that exist, in one lookup; with `fields` (SortKeys field names), a
        tuple of just those as stored instead (sortthread.stored_sort_keys: `reply` 0 or
        1, `references` one space-separated string). The SQLite store keeps them from
        delivery on; this default, for stores that keep none, computes them from each
        header."""
        from server.protocols.imap.sortthread import sort_keys_from_header, stored_sort_keys

        out: dict[int, object] = {}
        for uid, (_, head, _) in self.message_sources(folder, uids, header=True).items():
            if head is not None:
                keys = sort_keys_from_header(head)
                out[uid] = keys if fields is None else stored_sort_keys(keys, fields)
        return out

    @abstractmethod
    def info(self, folder: str, uid: int) -> object:
        """The cached MIME metadata (server.protocols.imap.bodystructure.MessageInfo) of a message."""

    @abstractmethod
    def set_flags(
        self,
        folder: str,
        uids: Sequence[int],
        op: FlagOp,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> FlagResult: ...

    @abstractmethod
    def copy(self, folder: str, uids: Sequence[int], dest: str) -> CopyResult: ...

    @abstractmethod
    def move(self, folder: str, uids: Sequence[int], dest: str) -> CopyResult:
        """Atomic copy + expunge from the source (RFC 6851)."""

    @abstractmethod
    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (only those among `uids` when given);
        returns the expunged UIDs."""

    def delete_messages(
        self, folder: str, uids: Sequence[int], also_seen: Sequence[int] = ()
    ) -> list[int]:
        """Expunge exactly `uids` (flagged \\Deleted or not) and mark `also_seen` \\Seen:
        POP3's UPDATE. Returns the expunged UIDs (those that still existed). The SQLite
        store does it in one transaction with one MODSEQ and one notification, so other
        sessions never see a \\Deleted flag in between and a failure changes nothing.
        This default, for stores without transactions, goes through the flag in three
        calls and takes the flag back if the expunge fails."""
        if also_seen:
            self.set_flags(folder, list(also_seen), "+", ["\\Seen"])
        if not uids:
            return []
        self.set_flags(folder, list(uids), "+", ["\\Deleted"])
        try:
            return self.expunge(folder, list(uids))
        except StoreError:
            try:
                self.set_flags(folder, list(uids), "-", ["\\Deleted"])
            except StoreError:
                pass
            raise

    @abstractmethod
    def claim_recent(self, folder: str) -> set[int]:
        """UIDs that are \\Recent for the session calling this (the first session to
        select the folder after delivery gets them; RFC 3501 2.3.2)."""

    # --- URLAUTH access keys (RFC 4467) --------------------------------------------
    def urlauth_key(self, folder: str, create: bool = False) -> bytes | None:
        """The folder's URLAUTH access key (random, 32 octets), made first when `create`;
        None when it has none. Raises NoSuchFolder. A folder made again under the same
        name (a new UIDVALIDITY) has a new key. This default keeps keys in memory."""
        import secrets

        keys: dict[tuple[str, int], bytes] = vars(self).setdefault("_urlauth_keys", {})
        ident = (
            folder.upper() if folder.upper() == "INBOX" else folder,
            self.status(folder).uidvalidity,
        )
        if ident not in keys and create:
            keys[ident] = secrets.token_bytes(32)
        return keys.get(ident)

    def reset_urlauth_keys(self, folder: str | None = None) -> None:
        """Forget the access keys of `folder` (raises NoSuchFolder), or of every folder:
        the URLs made with them stop working (RESETKEY)."""
        keys: dict[tuple[str, int], bytes] = vars(self).setdefault("_urlauth_keys", {})
        if folder is None:
            keys.clear()
            return
        uidvalidity = self.status(folder).uidvalidity
        name = folder.upper() if folder.upper() == "INBOX" else folder
        keys.pop((name, uidvalidity), None)

    # --- change notification ------------------------------------------------------
    @abstractmethod
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the event loop that was running when subscribing) after
        any committed change to this mailbox by any process; returns the unsubscribe
        function. The callback reads what changed with changes_since()."""

    def change_generation(self) -> int | None:
        """A counter of the notifications this process delivered for this mailbox (None
        when the store has none): a changes_since() result read after the counter showed
        g includes every change announced up to g, so sessions may share it."""
        return None

    # --- POP3 ------------------------------------------------------------------------
    @abstractmethod
    def lock_maildrop(self) -> Callable[[], None]:
        """Exclusive POP3 maildrop lock across processes; raises MailboxInUse; returns the
        release function. A killed process releases it."""


class MailStore(ABC):
    """The mailbox database of one back-end server."""

    @abstractmethod
    def mailbox(self, name: str) -> MailboxStore:
        """Open (creating with DEFAULT_FOLDERS on first use) one user's mailbox."""

    def opened(self, name: str) -> MailboxStore | None:
        """The mailbox if this process has it open already, so that getting it reads
        nothing from the disk; None when mailbox() would have to open it."""
        return None

    @abstractmethod
    def delete_mailbox(self, name: str) -> None: ...

    def prune_tombstones(self, older_than_days: float) -> int:
        """Forget the UIDs of messages expunged more than `older_than_days` ago (kept so
        far for QRESYNC's VANISHED, RFC 7162); returns how many were dropped. A client
        resynchronizing from a MODSEQ older than the newest forgotten expunge still gets a
        correct answer: changes_since() then counts every absent UID up to the highest
        forgotten one as vanished (more than happened; clients ignore UIDs they don't
        know), so it costs such a client a longer VANISHED (EARLIER), never a lost expunge.
        Stores that keep no tombstones drop nothing."""
        return 0

    @abstractmethod
    def check(self) -> list[str]:
        """Integrity check: problems found (empty when all is well)."""

    @abstractmethod
    def close(self) -> None: ...
