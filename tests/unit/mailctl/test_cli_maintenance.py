"""mailctl prune-mailboxdatabase (Prune-MailboxDatabase)."""

from __future__ import annotations

import time

from server.settings.paths import Home
from server.store import open_store
from server.store.sqlite import SqliteMailbox
from tests.unit.mailctl.cli_helpers import mailctl, ok

MSG = b"From: a@example.com\r\nSubject: hello %d\r\n\r\nbody\r\n"
DAY = 86400


def backdate(box: SqliteMailbox, uids: list[int], days: float) -> None:
    with box.pool.conn() as c:
        c.executemany(
            "UPDATE tombstones SET at=? WHERE uid=?",
            [(int(time.time() - days * DAY), uid) for uid in uids],
        )


def tombstones(box: SqliteMailbox) -> list[int]:
    with box.pool.conn() as c:
        return [r[0] for r in c.execute("SELECT uid FROM tombstones ORDER BY uid")]


def test_prune_forgets_only_old_expunges(home: Home) -> None:
    with open_store(home, "MBX01") as store:
        box = store.mailbox("alice")
        for i in range(1, 6):
            box.append("INBOX", MSG % i)
        box.delete_messages("INBOX", [1, 2, 4])
        backdate(box, [1, 2], days=40)
        backdate(box, [4], days=10)
    got = ok(home, "prune-mailboxdatabase", "-o", "json").json()
    assert got == {"Server": "MBX01", "OlderThanDays": 30, "TombstonesRemoved": 2}
    with open_store(home, "MBX01") as store:
        assert tombstones(store.mailbox("alice")) == [4]
    # The Exchange spelling, a shorter limit, the server named.
    got = ok(
        home, "Prune-MailboxDatabase", "-OlderThanDays", "7", "-Server", "mbx01", "-o", "json"
    ).json()
    assert got["TombstonesRemoved"] == 1 and got["Server"] == "MBX01"
    with open_store(home, "MBX01") as store:
        box = store.mailbox("alice")
        assert tombstones(box) == []
        assert [r.uid for r in box.snapshot("INBOX").rows] == [3, 5]  # messages untouched
        assert box.check() == []


def test_prune_without_a_database_creates_none(home: Home) -> None:
    got = ok(home, "prune-mailboxdatabase", "-o", "json").json()
    assert got["TombstonesRemoved"] == 0
    assert not home.database("MBX01").exists()


def test_prune_rejects_bad_values(home: Home) -> None:
    assert mailctl(home, "prune-mailboxdatabase", "--older-than-days", "-1").code == 2
    assert mailctl(home, "prune-mailboxdatabase", "--server", "NOPE").code == 2
