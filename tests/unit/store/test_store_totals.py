"""The mailbox totals a quota is checked against (server.store.sqlite.totals): kept between
calls, they must always equal a fresh count, whoever changed the mailbox; and a session that
appends in a loop must not count the whole mailbox again at every APPEND."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from server.store.api import NewMessage, NoSuchFolder, OverQuota
from server.store.sqlite import SqliteMailbox, SqliteMailStore, totals


def msg(n: int, size: int = 100) -> bytes:
    return b"Subject: m%d\r\n\r\n" % n + b"x" * size + b"\r\n"


def counted(box: SqliteMailbox) -> tuple[int, int]:
    with sqlite3.connect(box.dir / "mailbox.db") as c:
        count, size = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
    return count, size


def test_totals_follow_changes_from_another_store(tmp_path: Path) -> None:
    """Two stores on one folder stand for two processes: each sees the other's changes."""
    with SqliteMailStore(tmp_path / "db") as one, SqliteMailStore(tmp_path / "db") as two:
        a, b = one.mailbox("alice"), two.mailbox("alice")
        a.create_folder("Work")
        assert a.usage_totals() == counted(a) == (0, 0)

        steps = [
            lambda: a.append("INBOX", msg(1)),
            lambda: b.append_many("Work", [NewMessage(msg(2, 300)), NewMessage(msg(3, 50))]),
            lambda: a.append("INBOX", msg(4, 7)),
            lambda: b.copy("INBOX", [1, 2], "Work"),
            lambda: b.set_flags("Work", [1], "+", ["\\Deleted"]),
            lambda: b.expunge("Work"),
            lambda: a.move("INBOX", [1], "Work"),
            lambda: b.delete_messages("INBOX", [2]),
            lambda: a.rename_folder("Work", "Play"),
            lambda: b.append("Play", msg(5, 999)),
            lambda: a.delete_folder("Play"),
        ]
        for step in steps:
            step()
            # Asked of both after each change: one of them made it, the other kept old sums.
            assert a.usage_totals() == counted(a)
            assert b.usage_totals() == counted(b)


def test_an_append_loop_does_not_count_again(
    box: SqliteMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        box.append("INBOX", msg(n))
    scans = []
    real = totals.scan_totals
    monkeypatch.setattr(totals, "scan_totals", lambda c: scans.append(1) or real(c))
    box.usage_totals()
    for n in range(5, 25):
        box.append("INBOX", msg(n, n))
        assert box.usage_totals() == counted(box)
    assert len(scans) == 1


def test_a_failed_append_leaves_the_totals(box: SqliteMailbox) -> None:
    box.append("INBOX", msg(1))
    before = box.usage_totals()
    with pytest.raises(NoSuchFolder):
        box.append("Nowhere", msg(2))
    assert box.usage_totals() == before == counted(box)


def test_sums_kept_before_another_stores_change_are_not_moved_forward(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as one, SqliteMailStore(tmp_path / "db") as two:
        a, b = one.mailbox("alice"), two.mailbox("alice")
        a.append("INBOX", msg(1))
        a.usage_totals()  # kept: one message
        b.append("INBOX", msg(2, 500))  # not seen by a's kept sums
        a.append("INBOX", msg(3, 20))  # must not add its message to the stale sums
        assert (
            a.usage_totals()
            == counted(a)
            == (3, sum(len(msg(*n)) for n in ((1,), (2, 500), (3, 20))))
        )


def test_room_refuses_an_append_past_it_and_changes_nothing(box: SqliteMailbox) -> None:
    """The quota is checked inside the append's transaction (append_many's `room`): a
    refused MULTIAPPEND stores none of its messages and leaves no body file behind."""
    box.append("INBOX", msg(1, 500))
    used = counted(box)[1]
    files = sorted(os.listdir(box.msgs))
    lot = [NewMessage(msg(2, 100)), NewMessage(msg(3, 100))]
    with pytest.raises(OverQuota):
        box.append_many("INBOX", lot, room=used + len(msg(2, 100)) + 10)
    assert counted(box) == box.usage_totals() == (1, used)
    assert sorted(os.listdir(box.msgs)) == files
    box.append_many("INBOX", lot, room=used + 2 * len(msg(2, 100)))  # exactly full: taken
    assert counted(box) == box.usage_totals() == (3, used + 2 * len(msg(2, 100)))


def test_a_missing_folder_outranks_the_quota(box: SqliteMailbox) -> None:
    with pytest.raises(NoSuchFolder):
        box.append_many("Nowhere", [NewMessage(msg(1))], room=0)


def test_the_folder_key_changes_with_every_change_that_can_change_the_sums(
    box: SqliteMailbox,
) -> None:
    """The key is one row of sums (totals.folder_key); each of these changes must give a
    key not seen before, or kept sums would be taken for current ones."""
    seen = set()

    def key() -> totals.FolderKey:
        with box.pool.conn() as c:
            return totals.folder_key(c)

    steps = [
        lambda: box.create_folder("A"),
        lambda: box.create_folder("B"),
        lambda: box.append("A", msg(1)),
        lambda: box.delete_folder("A"),
        lambda: box.create_folder("C"),  # as many folders as before, a new id
        lambda: box.append("B", msg(2)),
        lambda: box.set_flags("B", [1], "+", ["\\Deleted"]),
        lambda: box.expunge("B"),
        lambda: box.append("INBOX", msg(3)),
    ]
    seen.add(key())
    for step in steps:
        step()
        now = key()
        assert now not in seen
        seen.add(now)
        assert box.usage_totals() == counted(box)
    before = key()
    box.rename_folder("B", "A")  # no message comes or goes: the sums stay right
    assert key() == before
    assert box.usage_totals() == counted(box)
