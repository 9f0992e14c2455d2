"""Tombstone pruning: old expunges forgotten, QRESYNC answers still complete."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from server.store import api
from server.store.sqlite import SCHEMA_VERSION, SqliteMailbox, SqliteMailStore

MSG = b"From: a@example.com\r\nSubject: hello %d\r\n\r\nbody\r\n"
DAY = 86400


def filled(store: SqliteMailStore, name: str = "alice", n: int = 8) -> SqliteMailbox:
    box = store.mailbox(name)
    for i in range(1, n + 1):
        box.append("INBOX", MSG % i)
    return box


def backdate(box: SqliteMailbox, uids: list[int], days: float) -> None:
    with box.pool.conn() as c:
        c.executemany(
            "UPDATE tombstones SET at=? WHERE uid=?",
            [(int(time.time() - days * DAY), uid) for uid in uids],
        )


def tombstones(box: SqliteMailbox) -> list[int]:
    with box.pool.conn() as c:
        return [r[0] for r in c.execute("SELECT uid FROM tombstones ORDER BY uid")]


def test_only_tombstones_older_than_the_limit_go(store: SqliteMailStore) -> None:
    box = filled(store)
    box.delete_messages("INBOX", [2, 3])
    box.delete_messages("INBOX", [6])
    backdate(box, [2, 3], days=40)
    modseq = box.status("INBOX").highestmodseq
    assert store.prune_tombstones(30) == 2
    assert tombstones(box) == [6]
    assert box.status("INBOX").highestmodseq == modseq  # not a change clients see
    assert store.prune_tombstones(30) == 0
    assert box.check() == []


def test_changes_since_a_recent_modseq_stay_exact(store: SqliteMailStore) -> None:
    box = filled(store)
    box.delete_messages("INBOX", [2])
    backdate(box, [2], days=40)
    recent = box.status("INBOX").highestmodseq
    box.delete_messages("INBOX", [5])
    store.prune_tombstones(30)
    assert box.changes_since("INBOX", recent).vanished == [5]


def test_changes_since_a_pruned_modseq_count_every_absent_uid(store: SqliteMailStore) -> None:
    box = filled(store)
    old = box.status("INBOX").highestmodseq
    box.delete_messages("INBOX", [1, 4])
    box.delete_messages("INBOX", [7])
    backdate(box, [1, 4], days=40)
    store.prune_tombstones(30)
    changes = box.changes_since("INBOX", old)
    present = {r.uid for r in box.snapshot("INBOX").rows}
    assert {1, 4, 7} <= set(changes.vanished)  # nothing lost
    assert not present & set(changes.vanished)  # nothing existing reported gone
    assert changes.vanished == sorted(changes.vanished)


def test_a_snapshot_cached_before_the_pruned_expunge_is_reloaded(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as first, SqliteMailStore(tmp_path / "db") as other:
        box = filled(first)
        assert len(box.snapshot("INBOX").rows) == 8  # cached in this "process"
        elsewhere = other.mailbox("alice")
        elsewhere.delete_messages("INBOX", [3])
        backdate(elsewhere, [3], days=40)
        other.prune_tombstones(30)
        assert [r.uid for r in box.snapshot("INBOX").rows] == [1, 2, 4, 5, 6, 7, 8]
        assert box.status("INBOX").messages == 7


def test_prunes_every_mailbox_and_folder(store: SqliteMailStore) -> None:
    a, b = filled(store, "alice"), filled(store, "bob")
    a.move("INBOX", [1, 2], "Archive")
    b.delete_messages("INBOX", [8])
    backdate(a, [1, 2], days=2)
    backdate(b, [8], days=2)
    assert store.prune_tombstones(1.5) == 3
    assert tombstones(a) == tombstones(b) == []


def test_the_contracts_default_prunes_nothing(store: SqliteMailStore) -> None:
    assert api.MailStore.prune_tombstones(store, 0) == 0


def test_schema_1_databases_are_upgraded(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as s:
        box = filled(s, n=3)
        box.delete_messages("INBOX", [1])
        path = box.dir / "mailbox.db"
    conn = sqlite3.connect(path)
    for stmt in (
        "ALTER TABLE tombstones DROP COLUMN at",
        "ALTER TABLE folders DROP COLUMN pruned_modseq",
        "ALTER TABLE folders DROP COLUMN pruned_uid",
        "PRAGMA user_version=1",
    ):
        conn.execute(stmt)
    conn.close()
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        assert s.prune_tombstones(1) == 0  # dated from the upgrade, not pruned at once
        box.delete_messages("INBOX", [2])
        assert tombstones(box) == [1, 2]
        assert box.check() == []
        with box.pool.conn() as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_imap_qresync_select_from_a_pruned_modseq(store: SqliteMailStore) -> None:
    from tests.unit.backend.imap.test_imap_session import Client

    box = filled(store, n=5)
    c = Client(store).login()  # type: ignore[arg-type]
    c("e ENABLE QRESYNC")
    out = c.select()
    modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", out).group(1))
    uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", out).group(1))
    c("u UNSELECT")
    box.delete_messages("INBOX", [2, 3])
    backdate(box, [2, 3], days=40)
    store.prune_tombstones(30)
    out = c(f"s SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:5))")
    assert "* VANISHED (EARLIER) 2:3" in out, out
