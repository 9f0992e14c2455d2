"""Back-end pieces that need no sockets: UPDATE, sizes, rendering, options; and the small
in-memory store the POP3 tests use where the real store is not the point."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.backend.pop3.connection import IdleTimer
from server.backend.pop3.maildrop import (
    ASKS_RECEIPT,
    FILE_CHUNK,
    READ_SIZE,
    WIRE_READY,
    BodyPaths,
    FileFacts,
    MaildropFiles,
    PopOptions,
    apply_update,
    asks_for_receipt,
    crlf_lines,
    header_end,
    message_sizes,
    read_file,
    render_for_retrieval,
    wire_ready,
)
from server.protocols.pop3.responses import stuff
from server.settings.models import Mailbox, PopSettings
from server.store.api import (
    AppendResult,
    FlagResult,
    FolderSnapshot,
    FolderStatus,
    MailboxInUse,
    MessageRow,
    StoreError,
)
from server.store.sqlite import SqliteMailbox, SqliteMailStore


class FakeMailbox:
    """The slice of MailboxStore the POP3 back end uses, in memory, thread-safe."""

    def __init__(self, name: str, uidvalidity: int = 1234) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.modseq = 1
        self.messages: dict[int, tuple[bytes, set[str]]] = {}
        self.locked = False
        self.fail_expunge = False
        self.reads = 0
        self._mutex = threading.Lock()
        self._subscribers: list[tuple[Callable[[], None], asyncio.AbstractEventLoop | None]] = []

    def append(
        self,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> AppendResult:
        with self._mutex:
            uid, self.uidnext = self.uidnext, self.uidnext + 1
            self.messages[uid] = (raw, set(flags))
            self.modseq += 1
        self._notify()
        return AppendResult(self.uidvalidity, uid, self.modseq)

    def snapshot(self, folder: str) -> FolderSnapshot:
        with self._mutex:
            rows = [
                MessageRow(uid, frozenset(flags), 1, len(raw), datetime(2024, 1, 1, tzinfo=UTC))
                for uid, (raw, flags) in sorted(self.messages.items())
            ]
        status = FolderStatus(
            folder,
            self.uidvalidity,
            self.uidnext,
            self.modseq,
            len(rows),
            0,
            0,
            sum(r.size for r in rows),
            0,
        )
        return FolderSnapshot(status, rows)

    def read(self, folder: str, uid: int) -> bytes:
        self.reads += 1
        with self._mutex:
            if uid not in self.messages:
                raise StoreError(f"message {uid} was expunged")
            return self.messages[uid][0]

    def flags(self, uid: int) -> set[str]:
        return set(self.messages[uid][1])

    def set_flags(
        self,
        folder: str,
        uids: Sequence[int],
        op: str,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> FlagResult:
        with self._mutex:
            for uid in uids:
                if uid in self.messages:
                    current = self.messages[uid][1]
                    if op == "+":
                        current |= set(flags)
                    elif op == "-":
                        current -= set(flags)
                    else:
                        current.clear()
                        current |= set(flags)
            self.modseq += 1
        self._notify()
        return FlagResult([])

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> list[int]:
        if self.fail_expunge:
            raise StoreError("disk full")
        with self._mutex:
            gone = [
                u
                for u in (uids or list(self.messages))
                if u in self.messages and "\\Deleted" in self.messages[u][1]
            ]
            for uid in gone:
                del self.messages[uid]
        self._notify()
        return gone

    def delete_messages(
        self, folder: str, uids: Sequence[int], also_seen: Sequence[int] = ()
    ) -> list[int]:
        if self.fail_expunge:
            raise StoreError("disk full")
        with self._mutex:
            gone = [u for u in uids if u in self.messages]
            for uid in also_seen:
                if uid in self.messages and uid not in gone:
                    self.messages[uid][1].add("\\Seen")
            for uid in gone:
                del self.messages[uid]
            self.modseq += 1
        self._notify()
        return gone

    def body_paths(self, folder: str, uids: Sequence[int]) -> dict[int, Path]:
        return {}  # not kept as files: the back end reads through read()

    def lock_maildrop(self) -> Callable[[], None]:
        with self._mutex:
            if self.locked:
                raise MailboxInUse("in use")
            self.locked = True

        def release() -> None:
            self.locked = False

        return release

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = (callback, loop)
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry)

    def _notify(self) -> None:
        for callback, loop in list(self._subscribers):
            if loop is None:
                callback()
            else:
                loop.call_soon_threadsafe(callback)


class FakeStore:
    def __init__(self) -> None:
        self.boxes: dict[str, FakeMailbox] = {}

    def mailbox(self, name: str) -> FakeMailbox:
        return self.boxes.setdefault(name.lower(), FakeMailbox(name))

    def close(self) -> None:
        pass


# --- tests -------------------------------------------------------------------------------
def filled(*raws: bytes) -> FakeMailbox:
    box = FakeMailbox("alice")
    for raw in raws:
        box.append("INBOX", raw)
    return box


def test_update_deletes_exactly_the_given_uids_and_marks_seen() -> None:
    box = filled(b"a\r\n", b"b\r\n", b"c\r\n")
    box.set_flags("INBOX", [3], "+", ["\\Deleted"])  # flagged by an IMAP client, not by POP3
    apply_update(box, delete=(1,), seen=(2,))
    assert sorted(box.messages) == [2, 3]
    assert "\\Seen" in box.flags(2) and "\\Deleted" in box.flags(3)


def test_failed_update_changes_nothing() -> None:
    box = filled(b"a\r\n", b"b\r\n")
    box.fail_expunge = True
    with pytest.raises(StoreError):
        apply_update(box, delete=(1,), seen=(2,))
    assert sorted(box.messages) == [1, 2]
    assert box.flags(1) == box.flags(2) == set()


def test_update_of_messages_already_seen_writes_nothing() -> None:
    box = filled(b"a\r\n", b"b\r\n", b"c\r\n")
    box.set_flags("INBOX", [1, 2], "+", ["\\Seen"])
    before = box.modseq
    apply_update(box, delete=(), seen=(1, 2))
    assert box.modseq == before  # no store write at all
    apply_update(box, delete=(), seen=(2, 3))  # 3 is not seen yet
    assert box.modseq == before + 1 and "\\Seen" in box.flags(3)
    apply_update(box, delete=(1,), seen=(2,))  # a deletion always goes to the store
    assert sorted(box.messages) == [2, 3]


def test_render_turns_bare_lf_into_crlf_and_keeps_crlf_messages() -> None:
    crlf = b"A: b\r\n\r\nbody\r\n"
    assert render_for_retrieval(crlf, None, PopSettings()) is crlf
    assert render_for_retrieval(b"A: b\n\nbody\r\nx\n", None, PopSettings()) == (
        b"A: b\r\n\r\nbody\r\nx\r\n"
    )


def test_receipt_precheck_looks_only_at_the_header() -> None:
    assert asks_for_receipt(b"From: a\r\nDisposition-Notification-To: a@b\r\n\r\nx\r\n")
    assert asks_for_receipt(b"disposition-notification-TO: a@b\n\nx\n")
    assert not asks_for_receipt(b"From: a\r\n\r\nDisposition-Notification-To: a@b\r\n")
    assert not asks_for_receipt(b"From: a\n\nDisposition-Notification-To: a@b\n")
    assert asks_for_receipt(b"Disposition-Notification-To: a@b")  # header only, no body


def test_header_end_stops_at_the_first_blank_line_of_either_kind() -> None:
    assert header_end(b"A: 1\r\n\r\nbody\n\nmore") == 4
    assert header_end(b"A: 1\n\nbody\r\n\r\n") == 4
    assert header_end(b"A: 1\r\nB: 2") == 10  # no body: all header


@pytest.mark.parametrize(
    ("data", "ready"),
    [
        (b"A: 1\r\n\r\nbody\r\n", True),
        (b"A: 1\r\n\r\nbody", False),  # no final CRLF
        (b"A: 1\r\n\r\n.dot\r\n", False),  # to be byte-stuffed
        (b".A: 1\r\n\r\nx\r\n", False),  # the first line too
        (b"A: 1\n\nbody\r\n", False),  # bare LF
        (b"A: 1\r\n\r\nx\n.y\r\n", False),  # a bare LF before a dot
        (b"A: 1\r\n\r\na.b\r\nc\r.\r\n", True),  # dots and a bare CR not at a line start
        (b"", False),
    ],
)
def test_wire_ready_is_exactly_when_stuffing_and_crlf_change_nothing(
    data: bytes, ready: bool
) -> None:
    assert wire_ready(data) is ready
    if ready:
        assert stuff(crlf_lines(data)) == data


def test_file_facts_are_computed_once_per_path_and_bounded() -> None:
    facts = FileFacts(limit=2)
    receipt = b"Disposition-Notification-To: a@b\r\n\r\nx\r\n"
    assert facts.of("/m/1", receipt) == WIRE_READY | ASKS_RECEIPT
    assert facts.of("/m/1", b"anything else") == WIRE_READY | ASKS_RECEIPT  # remembered
    assert facts.of("/m/2", b"x\n.y") == 0
    assert facts.of("/m/3", b"z\r\n") == WIRE_READY  # full: forgets the others
    assert facts.of("/m/1", b"x") == 0  # scanned again
    assert facts.of(None, b"z\r\n") == WIRE_READY  # no file: never remembered


def test_read_file_reads_small_and_large_files_whole(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"x" * 100)
    large.write_bytes(bytes(range(256)) * (3 * READ_SIZE // 256 + 7))
    exact, huge = tmp_path / "exact", tmp_path / "huge"
    exact.write_bytes(b"e" * READ_SIZE)  # a full first read, then the end
    huge.write_bytes(b"h" * (READ_SIZE + 2 * FILE_CHUNK))  # full chunks, then the end
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path in (small, large, exact, huge):
        assert read_file(str(path)) == path.read_bytes()
    assert read_file(str(empty)) == b""
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "gone"))


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self._cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class FakeLoop:
    """time() and call_at() of an event loop, driven by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def advance(self, to: float) -> None:
        self.now = to
        for handle in [h for h in self.handles if h.when() <= to]:
            self.handles.remove(handle)
            if not handle.cancelled():
                handle.callback()


def test_idle_timer_expires_only_after_a_whole_idle_timeout() -> None:
    loop = FakeLoop()
    expired: list[float] = []
    timer = IdleTimer(loop, lambda: expired.append(loop.now))  # type: ignore[arg-type]
    timer.arm(10)
    loop.advance(6)
    timer.disarm()  # a command arrived: busy
    loop.advance(12)  # the first handle fires while busy: nothing happens
    timer.arm(10)  # waiting again, until 22
    loop.advance(21)
    assert expired == []
    loop.advance(22)
    assert expired == [22]
    assert len([h for h in loop.handles if not h.cancelled()]) == 0


def test_idle_timer_takes_a_shorter_timeout_at_once_and_cancels() -> None:
    loop = FakeLoop()
    expired: list[float] = []
    timer = IdleTimer(loop, lambda: expired.append(loop.now))  # type: ignore[arg-type]
    timer.arm(1800)
    timer.arm(60)  # e.g. a reload shortened the timeout
    loop.advance(60)
    assert expired == [60]
    timer.arm(5)
    timer.cancel()
    loop.advance(100)
    assert expired == [60]


def test_estimated_sizes_read_nothing_exact_sizes_measure_the_rendering() -> None:
    box = filled(b"A: b\n\nbody\n", b"A: b\r\n\r\n")
    rows = [(1, 11), (2, 8)]

    def render(raw: bytes) -> bytes:
        return render_for_retrieval(raw, None, PopSettings())

    assert message_sizes(box, rows, False, render) == rows and box.reads == 0
    assert message_sizes(box, rows, True, render) == [(1, 14), (2, 8)]


def test_mailbox_overrides_apply_only_without_protocol_defaults() -> None:
    pop = PopSettings(EnableExactRFC822Size=False, MessageRetrievalSortOrder="Descending")
    box = Mailbox(
        PrimarySmtpAddress="a@b.test",
        Server="MBX01",
        PopEnableExactRFC822Size=True,
        PopMessagesRetrievalMimeFormat="TextOnly",
    )
    assert PopOptions.of(pop, box) == PopOptions(exact_size=False, descending=True)
    own = box.model_copy(update={"PopUseProtocolDefaults": False})
    assert PopOptions.of(pop, own) == PopOptions(exact_size=True, descending=True)


# --- RETR reads the files looked up at login ------------------------------------------------
@pytest.fixture
def real_box(tmp_path: Path) -> Iterator[SqliteMailbox]:
    with SqliteMailStore(tmp_path / "db") as store:
        box = store.mailbox("alice")
        for n in range(1, 4):
            box.append("INBOX", b"Subject: %d\r\n\r\nbody\r\n" % n)
        yield box


def test_maildrop_files_read_with_no_store_lookup(real_box: SqliteMailbox, monkeypatch) -> None:
    files = MaildropFiles(real_box, [1, 2, 3])

    def no_lookup(*args: object) -> None:
        raise AssertionError("looked up in the store")

    monkeypatch.setattr(real_box, "read", no_lookup)
    monkeypatch.setattr(real_box, "body_paths", no_lookup)
    assert [files.read(uid) for uid in (1, 2, 3)] == [
        b"Subject: %d\r\n\r\nbody\r\n" % n for n in (1, 2, 3)
    ]
    files.close()


def test_maildrop_files_expunged_message_is_gone(real_box: SqliteMailbox) -> None:
    files = MaildropFiles(real_box, [1, 2, 3])
    real_box.delete_messages("INBOX", [1])  # its file is removed
    with pytest.raises(StoreError):
        files.read(1)
    assert files.read(2).startswith(b"Subject: 2")
    files.close()


def test_maildrop_files_moved_message_is_gone_though_its_file_stays(
    real_box: SqliteMailbox,
) -> None:
    files = MaildropFiles(real_box, [1, 2, 3])
    real_box.move("INBOX", [2], "Archive")  # same file, now Archive's: notified, looked up again
    with pytest.raises(StoreError):
        files.read(2)
    assert files.read(3).startswith(b"Subject: 3")
    files.close()
    real_box.move("INBOX", [3], "Archive")
    assert files.read(3).startswith(b"Subject: 3")  # closed: no longer follows changes


def test_maildrop_files_look_up_only_what_earlier_sessions_did_not(
    real_box: SqliteMailbox, monkeypatch
) -> None:
    first = MaildropFiles(real_box, [1, 2])
    known = first.paths
    first.close()
    asked: list[list[int]] = []
    lookup = real_box.body_paths

    def counting(folder: str, uids: list[int]) -> dict[int, Path]:
        asked.append(list(uids))
        return lookup(folder, uids)

    monkeypatch.setattr(real_box, "body_paths", counting)
    files = MaildropFiles(real_box)
    files.load([1, 2, 3], known)
    assert asked == [[3]]
    assert [files.read(uid) for uid in (1, 2, 3)] == [
        b"Subject: %d\r\n\r\nbody\r\n" % n for n in (1, 2, 3)
    ]
    files.close()


def test_maildrop_files_with_a_vanished_file_ask_the_store(real_box: SqliteMailbox) -> None:
    files = MaildropFiles(real_box)
    files.load([1, 2], {1: "/nonexistent/file", 2: "/nonexistent/other"})
    assert files.read(1) == b"Subject: 1\r\n\r\nbody\r\n"  # still stored: the store reads it
    files.close()
    real_box.delete_messages("INBOX", [2])
    with pytest.raises(StoreError):
        files.read(2)


def test_body_paths_keep_the_most_recent_maildrops_within_the_limit() -> None:
    cache = BodyPaths(limit=4)
    cache.put("Alice", 1, {1: "a1", 2: "a2"})
    cache.put("bob", 1, {1: "b1", 2: "b2"})
    assert cache.get("alice", 1) == {1: "a1", 2: "a2"}  # names are case-insensitive
    assert cache.get("alice", 2) is None  # another UIDVALIDITY: other messages
    cache.put("carol", 1, {1: "c1"})  # 5 > 4: bob, the least recently used, goes
    assert cache.get("bob", 1) is None and cache.get("carol", 1) == {1: "c1"}
    cache.put("alice", 1, {1: "a1"})  # replaces, and counts, the old entry
    cache.put("dave", 1, {1: "d1", 2: "d2"})
    assert cache.get("alice", 1) == {1: "a1"} and cache.get("dave", 1) is not None
    cache.put("huge", 1, {n: str(n) for n in range(5)})  # larger than the limit: not kept
    assert cache.get("huge", 1) is None and cache.get("carol", 1) == {1: "c1"}


def test_maildrop_files_of_a_store_without_files_use_read() -> None:
    box = filled(b"a\r\n", b"b\r\n")
    files = MaildropFiles(box, [1, 2])  # type: ignore[arg-type]
    assert files.read(2) == b"b\r\n" and box.reads == 1
    box.delete_messages("INBOX", [1])
    with pytest.raises(StoreError):
        files.read(1)
    files.close()
    assert box._subscribers == []
