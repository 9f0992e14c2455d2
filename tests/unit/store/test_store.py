"""The mailbox store (server/store/db.py) against its contract in server/store/api.py."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from server.settings.paths import Home
from server.store import db, normalize_crlf, open_store
from server.store.api import (
    DEFAULT_FOLDERS,
    FolderExists,
    FolderNotEmpty,
    InvalidFolderName,
    MailboxInUse,
    NoSuchFolder,
    StoreError,
)
from server.store.db import NewMessage, SqliteMailbox, SqliteMailStore, mailbox_key

MSG = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


def msg(n: int) -> bytes:
    return MSG.replace(b"hello", b"hello %d" % n)


@pytest.fixture
def store(tmp_path: Path):
    with SqliteMailStore(tmp_path / "db") as s:
        yield s


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    return store.mailbox("alice")


def body_files(box: SqliteMailbox) -> list[str]:
    return sorted(os.listdir(box.msgs))


# --- mailboxes and folders -------------------------------------------------------------


def test_open_store_uses_the_servers_database_folder(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with open_store(home, "MBX01") as s:
        s.mailbox("alice")
        assert (home.database("MBX01") / "mailboxes" / "alice" / "mailbox.db").exists()


def test_new_mailbox_has_default_folders_with_special_use(box: SqliteMailbox) -> None:
    got = {f.name: f for f in box.folders()}
    assert set(got) == set(DEFAULT_FOLDERS)
    for name, special in DEFAULT_FOLDERS.items():
        assert got[name].special_use == special
        assert got[name].subscribed
        assert not got[name].has_children
    validities = {box.status(n).uidvalidity for n in DEFAULT_FOLDERS}
    assert len(validities) == len(DEFAULT_FOLDERS)


def test_mailbox_names_are_case_insensitive(store: SqliteMailStore) -> None:
    a = store.mailbox("Alice.Smith")
    a.append("INBOX", MSG)
    assert store.mailbox("alice.smith") is a
    assert store.mailbox_names() == ["Alice.Smith"]
    assert mailbox_key("../evil") != "../evil" and "/" not in mailbox_key("a/b")


def test_mailbox_is_reopened_from_disk(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as s:
        s.mailbox("bob").create_folder("Projects")
        s.mailbox("bob").append("Projects", MSG)
    with SqliteMailStore(tmp_path) as s:
        assert s.mailbox("BOB").status("Projects").messages == 1
        assert s.mailbox_names() == ["bob"]


def test_delete_mailbox(store: SqliteMailStore) -> None:
    store.mailbox("bob").append("INBOX", MSG)
    store.delete_mailbox("Bob")
    assert store.mailbox_names() == []
    assert store.mailbox("bob").status("INBOX").messages == 0  # a fresh one
    store.delete_mailbox("nobody")  # nothing to do


def test_inbox_is_case_insensitive(box: SqliteMailbox) -> None:
    box.append("inbox", MSG)
    assert box.status("InBoX").messages == 1
    box.create_folder("inbox/Sub")
    assert "INBOX/Sub" in {f.name for f in box.folders()}
    assert box.status("Inbox/Sub").name == "INBOX/Sub"


def test_create_folder_makes_parents_and_rejects_duplicates(box: SqliteMailbox) -> None:
    box.create_folder("Projects/2024/Q1/")  # trailing delimiter: RFC 3501 6.3.3
    got = {f.name: f for f in box.folders()}
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= set(got)
    assert got["Projects"].has_children and got["Projects/2024"].has_children
    assert not got["Projects/2024/Q1"].has_children
    assert not got["Projects"].subscribed
    with pytest.raises(FolderExists):
        box.create_folder("Projects")
    with pytest.raises(FolderExists):
        box.create_folder("inbox")


@pytest.mark.parametrize("name", ["", "a//b", "/a", "a*", "a%b", "bad\r\nname", "x\0"])
def test_create_folder_rejects_invalid_names(box: SqliteMailbox, name: str) -> None:
    with pytest.raises(InvalidFolderName):
        box.create_folder(name)


def test_create_folder_with_special_use(box: SqliteMailbox) -> None:
    box.create_folder("Everything", "\\All")
    assert {f.name: f.special_use for f in box.folders()}["Everything"] == "\\All"
    with pytest.raises(StoreError):
        box.create_folder("Odd", "\\Bogus")


def test_unknown_folder(box: SqliteMailbox) -> None:
    for call in (
        lambda: box.status("Nope"),
        lambda: box.snapshot("Nope"),
        lambda: box.append("Nope", MSG),
        lambda: box.delete_folder("Nope"),
        lambda: box.rename_folder("Nope", "Other"),
        lambda: box.copy("INBOX", [1], "Nope"),
    ):
        with pytest.raises(NoSuchFolder):
            call()


def test_subscriptions_outlive_the_folder(box: SqliteMailbox) -> None:
    """RFC 3501 6.3.6: DELETE does not unsubscribe, and a name that is not a folder may be
    subscribed; creating the folder brings the subscription back."""
    box.create_folder("Gone")
    box.set_subscribed("Gone", True)
    box.delete_folder("Gone")
    box.set_subscribed("Later/Sub", True)
    assert box.lost_subscriptions() == ["Gone", "Later/Sub"]
    box.create_folder("Gone")
    assert {f.name: f.subscribed for f in box.folders()}["Gone"]
    assert box.lost_subscriptions() == ["Later/Sub"]
    box.set_subscribed("Later/Sub", False)
    assert box.lost_subscriptions() == []
    with pytest.raises(InvalidFolderName):
        box.set_subscribed("a//b", True)


def test_recreated_folder_gets_a_new_larger_uidvalidity(box: SqliteMailbox) -> None:
    box.create_folder("Tmp")
    before = box.status("Tmp")
    box.append("Tmp", MSG)
    box.delete_folder("Tmp")
    box.create_folder("Tmp")
    after = box.status("Tmp")
    assert after.uidvalidity > before.uidvalidity
    assert after.uidnext == 1 and after.messages == 0


def test_delete_folder(box: SqliteMailbox) -> None:
    box.create_folder("Work/Old")
    box.append("Work", MSG)
    with pytest.raises(FolderNotEmpty):
        box.delete_folder("Work")
    with pytest.raises(InvalidFolderName):
        box.delete_folder("inbox")
    box.delete_folder("Work/Old")
    assert box.folders()  # Work has no children now
    box.delete_folder("Work")
    assert "Work" not in {f.name for f in box.folders()}
    assert body_files(box) == []


def test_rename_folder_moves_children_and_keeps_messages(box: SqliteMailbox) -> None:
    box.create_folder("A/B/C")
    box.append("A/B", MSG, ["\\Seen"])
    validity = box.status("A/B").uidvalidity
    box.set_subscribed("A/B", True)
    box.rename_folder("A", "X/Y")
    names = {f.name: f for f in box.folders()}
    assert {"X", "X/Y", "X/Y/B", "X/Y/B/C"} <= set(names)
    assert not any(n == "A" or n.startswith("A/") for n in names)
    assert names["X/Y/B"].subscribed
    st = box.status("X/Y/B")
    assert st.messages == 1 and st.uidvalidity == validity
    assert box.snapshot("X/Y/B").rows[0].flags == {"\\Seen"}


def test_rename_folder_errors(box: SqliteMailbox) -> None:
    box.create_folder("A")
    box.create_folder("B")
    with pytest.raises(FolderExists):
        box.rename_folder("A", "B")
    with pytest.raises(FolderExists):
        box.rename_folder("A", "inbox")
    with pytest.raises(InvalidFolderName):
        box.rename_folder("A", "A/inside")
    with pytest.raises(NoSuchFolder):
        box.rename_folder("Z", "Y")


def test_rename_inbox_moves_messages_and_leaves_inbox_empty(box: SqliteMailbox) -> None:
    box.create_folder("INBOX/Child")
    for n in range(3):
        box.append("INBOX", msg(n), ["\\Flagged"] if n == 1 else [])
    before = box.status("INBOX")
    box.rename_folder("inbox", "Old Mail")
    inbox = box.status("INBOX")
    assert inbox.messages == 0
    assert inbox.uidvalidity == before.uidvalidity
    assert inbox.uidnext == before.uidnext  # UIDs are never reused
    assert inbox.highestmodseq > before.highestmodseq
    assert box.changes_since("INBOX", before.highestmodseq).vanished == [1, 2, 3]
    old = box.snapshot("Old Mail")
    assert [r.uid for r in old.rows] == [1, 2, 3]
    assert old.status.uidvalidity != before.uidvalidity
    assert old.rows[1].flags == {"\\Flagged"}
    assert box.read("Old Mail", 3) == msg(2)
    assert "INBOX/Child" in {f.name for f in box.folders()}  # inferiors stay
    assert box.append("INBOX", MSG).uid == before.uidnext


def test_set_subscribed(box: SqliteMailbox) -> None:
    box.set_subscribed("Drafts", False)
    box.set_subscribed("INBOX", True)
    got = {f.name: f.subscribed for f in box.folders()}
    assert got["Drafts"] is False and got["INBOX"] is True


# --- messages -----------------------------------------------------------------------------------


def test_append_assigns_increasing_uids_and_modseqs(box: SqliteMailbox) -> None:
    st0 = box.status("INBOX")
    results = [box.append("INBOX", msg(n)) for n in range(3)]
    assert [r.uid for r in results] == [1, 2, 3]
    assert all(r.uidvalidity == st0.uidvalidity for r in results)
    modseqs = [r.modseq for r in results]
    assert modseqs == sorted(set(modseqs)) and modseqs[0] > st0.highestmodseq
    st = box.status("INBOX")
    assert (st.uidnext, st.highestmodseq, st.messages) == (4, modseqs[-1], 3)
    assert st.size == sum(len(msg(n)) for n in range(3))


def test_append_keeps_bytes_flags_and_internaldate(box: SqliteMailbox) -> None:
    raw = b"Subject: bare LF\n\nkept as given\n"
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))
    box.append("INBOX", raw, ["\\seen", "\\Recent", "\\Bogus", "$Label1", "$label1"], when)
    row = box.snapshot("INBOX").rows[0]
    assert box.read("INBOX", 1) == raw
    assert row.size == len(raw)
    assert row.internaldate == when and row.internaldate.utcoffset() == when.utcoffset()
    assert row.flags == {"\\Seen", "$Label1"}


def test_append_default_internaldate_is_now_and_aware(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    got = box.snapshot("INBOX").rows[0].internaldate
    assert got.tzinfo is not None
    assert abs((datetime.now(UTC) - got).total_seconds()) < 5


def test_append_many_is_one_change(box: SqliteMailbox) -> None:
    got = box.append_many("INBOX", [NewMessage(msg(n), ["\\Seen"]) for n in range(5)])
    assert [r.uid for r in got] == [1, 2, 3, 4, 5]
    assert len({r.modseq for r in got}) == 1
    assert box.status("INBOX").unseen == 0
    assert box.append_many("INBOX", []) == []


def test_read_and_info(box: SqliteMailbox) -> None:
    from server.protocols.imap.bodystructure import MessageInfo

    box.append("INBOX", MSG)
    assert box.read("INBOX", 1) == MSG
    info = box.info("INBOX", 1)
    assert isinstance(info, MessageInfo)
    assert info.subject == "hello" and info.size == len(MSG)
    with pytest.raises(StoreError):
        box.read("INBOX", 99)
    with pytest.raises(StoreError):
        box.info("INBOX", 99)


def test_info_is_computed_lazily_when_missing(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    with box.pool.conn() as c:
        c.execute("UPDATE bodies SET info=NULL")
    box._infos.clear()
    assert box.info("INBOX", 1).subject == "hello"
    with box.pool.conn() as c:
        assert c.execute("SELECT info FROM bodies").fetchone()[0] is not None


def test_set_flags_operations(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG, ["\\Seen"])
    box.append("INBOX", msg(2))
    r = box.set_flags("INBOX", [1, 2, 77], "+", ["\\Flagged", "Work"])
    assert [row.uid for row in r.changed] == [1, 2] and r.failed == []
    assert r.changed[0].flags == {"\\Seen", "\\Flagged", "Work"}
    modseq = r.changed[0].modseq
    assert box.status("INBOX").highestmodseq == modseq
    r = box.set_flags("INBOX", [1, 2], "-", ["\\seen", "WORK"])
    assert [row.flags for row in r.changed] == [{"\\Flagged"}, {"\\Flagged"}]
    assert r.changed[0].modseq == modseq + 1
    r = box.set_flags("INBOX", [2], "=", ["\\Answered", "\\Recent"])
    assert r.changed[0].flags == {"\\Answered"}
    # No change, no new MODSEQ.
    before = box.status("INBOX").highestmodseq
    assert box.set_flags("INBOX", [2], "+", ["\\Answered"]).changed == []
    assert box.status("INBOX").highestmodseq == before


def test_set_flags_unchangedsince(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    box.append("INBOX", msg(2))
    base = box.status("INBOX").highestmodseq
    box.set_flags("INBOX", [2], "+", ["\\Seen"])
    r = box.set_flags("INBOX", [1, 2], "+", ["\\Flagged"], unchangedsince=base)
    assert [row.uid for row in r.changed] == [1]
    assert r.failed == [2]
    assert box.snapshot("INBOX").rows[1].flags == {"\\Seen"}


@pytest.mark.parametrize("chunk", [4, 500])  # a folder scan, or chunks of "IN (...)"
def test_set_flags_on_many_uids(box: SqliteMailbox, monkeypatch, chunk: int) -> None:
    monkeypatch.setattr(db, "_IN_CHUNK", chunk)
    box.append_many("INBOX", [NewMessage(msg(n)) for n in range(30)])
    r = box.set_flags("INBOX", [*range(2, 40), 2, 3], "+", ["\\Seen"])
    assert [row.uid for row in r.changed] == list(range(2, 31))
    assert box.status("INBOX").unseen == 1
    box.set_flags("INBOX", range(1, 31), "+", ["\\Deleted"])
    assert box.expunge("INBOX", range(5, 100)) == list(range(5, 31))


def test_copy_shares_the_body_file(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG, ["\\Seen"])
    box.append("INBOX", msg(2))
    box.append("Archive", msg(3))
    r = box.copy("INBOX", [2, 1, 5], "Archive")
    assert r.uidvalidity == box.status("Archive").uidvalidity
    assert r.mapping == [(1, 2), (2, 3)]
    assert len(body_files(box)) == 3
    assert box.read("Archive", 2) == MSG
    arch = box.snapshot("Archive")
    assert arch.rows[1].flags == {"\\Seen"}
    assert arch.status.recent == 3
    assert box.status("INBOX").messages == 2
    # The file goes only with the last message that uses it.
    box.set_flags("INBOX", [1], "+", ["\\Deleted"])
    box.expunge("INBOX")
    assert len(body_files(box)) == 3 and box.read("Archive", 2) == MSG
    box.set_flags("Archive", [2], "+", ["\\Deleted"])
    box.expunge("Archive")
    assert len(body_files(box)) == 2
    assert box.check() == []


def test_copy_into_the_same_folder(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    assert box.copy("INBOX", [1], "INBOX").mapping == [(1, 2)]
    assert [r.uid for r in box.snapshot("INBOX").rows] == [1, 2]
    assert box.check() == []


def test_move(box: SqliteMailbox) -> None:
    for n in range(3):
        box.append("INBOX", msg(n))
    base = box.status("INBOX").highestmodseq
    r = box.move("INBOX", [1, 3], "Archive")
    assert r.mapping == [(1, 1), (3, 2)]
    assert [row.uid for row in box.snapshot("INBOX").rows] == [2]
    ch = box.changes_since("INBOX", base)
    assert ch.vanished == [1, 3] and ch.changed == []
    assert box.read("Archive", 2) == msg(2)
    assert len(body_files(box)) == 3
    assert box.move("INBOX", [], "Archive").mapping == []
    assert box.check() == []


def test_move_within_the_same_folder(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    base = box.status("INBOX").highestmodseq
    assert box.move("INBOX", [1], "INBOX").mapping == [(1, 2)]
    ch = box.changes_since("INBOX", base)
    assert ch.vanished == [1] and [r.uid for r in ch.changed] == [2]
    assert ch.highestmodseq >= max(r.modseq for r in ch.changed)
    assert box.check() == []


def test_expunge_only_deleted_and_only_given_uids(box: SqliteMailbox) -> None:
    for n in range(4):
        box.append("INBOX", msg(n))
    box.set_flags("INBOX", [1, 2, 3], "+", ["\\Deleted"])
    assert box.status("INBOX").deleted == 3
    assert box.expunge("INBOX", [2, 4]) == [2]
    assert box.expunge("INBOX") == [1, 3]
    assert box.expunge("INBOX") == []
    assert [r.uid for r in box.snapshot("INBOX").rows] == [4]
    with pytest.raises(StoreError):
        box.read("INBOX", 1)
    assert box.append("INBOX", MSG).uid == 5  # never reused
    assert len(body_files(box)) == 2


def test_changes_since_reports_changes_and_tombstones(box: SqliteMailbox) -> None:
    for n in range(3):
        box.append("INBOX", msg(n))
    base = box.status("INBOX").highestmodseq
    box.set_flags("INBOX", [3], "+", ["\\Seen", "\\Deleted"])
    box.set_flags("INBOX", [1], "+", ["\\Answered"])
    box.append("INBOX", msg(9))
    box.expunge("INBOX")
    ch = box.changes_since("INBOX", base)
    assert [r.uid for r in ch.changed] == [1, 4]
    assert ch.vanished == [3]
    assert ch.highestmodseq == box.status("INBOX").highestmodseq
    assert all(r.modseq > base for r in ch.changed)
    nothing = box.changes_since("INBOX", ch.highestmodseq)
    assert nothing.changed == [] and nothing.vanished == []
    assert [r.uid for r in box.changes_since("INBOX", 0).changed] == [1, 2, 4]


def test_claim_recent(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    box.append("INBOX", msg(2))
    assert box.status("INBOX").recent == 2
    modseq = box.status("INBOX").highestmodseq
    assert box.claim_recent("INBOX") == {1, 2}
    assert box.claim_recent("INBOX") == set()
    assert box.status("INBOX").recent == 0
    assert box.status("INBOX").highestmodseq == modseq
    box.append("INBOX", msg(3))
    assert box.claim_recent("INBOX") == {3}


def test_status_counts(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG, ["\\Seen"])
    box.append("INBOX", msg(2), ["\\Deleted"])
    box.append("INBOX", msg(3))
    st = box.status("INBOX")
    assert (st.messages, st.unseen, st.recent, st.deleted) == (3, 2, 3, 1)
    assert st.size == len(MSG) + len(msg(2)) + len(msg(3))
    snap = box.snapshot("INBOX")
    assert snap.status == st
    box.set_flags("INBOX", [3], "+", ["\\Seen", "\\Deleted"])
    st2 = box.snapshot("INBOX").status  # the incrementally updated counts
    assert (st2.unseen, st2.deleted) == (1, 2)
    assert box.status("INBOX") == st2


def test_snapshots_of_another_process_view_stay_current(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as a, SqliteMailStore(tmp_path) as b:
        ba, bb = a.mailbox("alice"), b.mailbox("alice")
        ba.append("INBOX", MSG)
        first = bb.snapshot("INBOX")
        ba.append("INBOX", msg(2))
        ba.set_flags("INBOX", [1], "+", ["\\Seen", "\\Deleted"])
        second = bb.snapshot("INBOX")
        assert [r.uid for r in first.rows] == [1] and first.rows[0].flags == set()
        assert [r.flags for r in second.rows] == [{"\\Seen", "\\Deleted"}, set()]
        ba.expunge("INBOX")
        third = bb.snapshot("INBOX")
        assert [r.uid for r in third.rows] == [2]
        assert third.status == ba.status("INBOX")
        ba.delete_folder("Drafts")
        ba.create_folder("Drafts")
        assert bb.snapshot("Drafts").rows == []


def test_lock_maildrop(box: SqliteMailbox, store: SqliteMailStore, tmp_path: Path) -> None:
    release = box.lock_maildrop()
    with pytest.raises(MailboxInUse):
        box.lock_maildrop()
    with SqliteMailStore(store.folder) as other, pytest.raises(MailboxInUse):
        other.mailbox("alice").lock_maildrop()
    release()
    release()  # twice is harmless
    box.lock_maildrop()()


def test_concurrent_threads_lose_nothing(box: SqliteMailbox) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                uid = box.append("INBOX", msg(n * 100 + i)).uid
                box.set_flags("INBOX", [uid], "+", [f"t{n}"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = box.snapshot("INBOX").rows
    assert [r.uid for r in rows] == list(range(1, 61))
    assert all(len(r.flags) == 1 for r in rows)


# --- integrity -----------------------------------------------------------------------------------


def test_check_passes_on_a_busy_mailbox(store: SqliteMailStore, box: SqliteMailbox) -> None:
    for n in range(5):
        box.append("INBOX", msg(n))
    box.copy("INBOX", [1, 2], "Archive")
    box.set_flags("INBOX", [1, 3], "+", ["\\Deleted"])
    box.expunge("INBOX")
    store.mailbox("bob").append("Drafts", MSG)
    assert store.check() == []


def test_check_finds_missing_and_truncated_bodies(
    store: SqliteMailStore, box: SqliteMailbox
) -> None:
    box.append("INBOX", MSG)
    box.append("INBOX", msg(2))
    first, second = body_files(box)
    os.unlink(box.msgs / first)
    (box.msgs / second).write_bytes(b"short")
    problems = store.check()
    assert any("missing" in p for p in problems)
    assert any("octets" in p for p in problems)
    assert all(p.startswith("alice: ") for p in problems)


def test_check_finds_uid_beyond_uidnext(box: SqliteMailbox) -> None:
    box.append("INBOX", MSG)
    with box.pool.conn() as c:
        c.execute("UPDATE folders SET uidnext=1 WHERE name='INBOX'")
    assert any("UIDNEXT" in p for p in box.check())


def test_orphans_of_dead_writers_are_removed(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as s:
        box = s.mailbox("alice")
        box.append("INBOX", MSG)
        dead = box.msgs / "12345-deadbeef0000.1"
        dead.write_bytes(b"half a message")
        mine = box.msgs / f"{s.token}.999"  # a live writer's file: maybe in flight
        mine.write_bytes(b"in flight")
        assert box.check() == []
        assert not dead.exists() and mine.exists()
        old = os.stat(mine).st_mtime - 7200
        os.utime(mine, (old, old))
        box.clean_orphans()
        assert not mine.exists()
        assert box.read("INBOX", 1) == MSG
    # Opening a mailbox cleans up too.
    with SqliteMailStore(tmp_path) as s:
        stray = s.mailbox("alice").msgs / "999-0123456789ab.3"
        stray.write_bytes(b"x")
    with SqliteMailStore(tmp_path) as s:
        s.mailbox("alice")
        assert not stray.exists()


def test_closed_store_refuses_new_mailboxes(tmp_path: Path) -> None:
    s = SqliteMailStore(tmp_path)
    s.close()
    with pytest.raises(StoreError):
        s.mailbox("alice")


def test_normalize_crlf() -> None:
    assert normalize_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    assert normalize_crlf(b"") == b""
    assert normalize_crlf(b"\r\n\r\n") == b"\r\n\r\n"


def test_idle_connections_of_little_used_mailboxes_are_closed(
    store: SqliteMailStore, monkeypatch
) -> None:
    monkeypatch.setattr(db, "OPEN_MAILBOXES", 3)
    boxes = [store.mailbox(f"user{n}") for n in range(6)]
    for box in boxes:
        box.append("INBOX", MSG)
    assert [b.pool.open for b in boxes] == [False, False, False, True, True, True]
    assert boxes[0].read("INBOX", 1) == MSG  # reopens on demand
    assert boxes[0].pool.open and not boxes[3].pool.open


def test_append_many_default_of_the_contract(box: SqliteMailbox) -> None:
    from server.store.api import MailboxStore

    got = MailboxStore.append_many(box, "INBOX", [NewMessage(msg(1)), NewMessage(msg(2))])
    assert [r.uid for r in got] == [1, 2]
