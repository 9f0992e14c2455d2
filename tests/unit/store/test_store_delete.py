"""MailboxStore.delete_messages: POP3's UPDATE as one store change."""

from __future__ import annotations

import os

import pytest

from server.store import api
from server.store.api import NoSuchFolder, StoreError
from server.store.sqlite import SqliteMailbox, SqliteMailStore

MSG = b"From: a@example.com\r\nSubject: hello %d\r\n\r\nbody\r\n"


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    box = store.mailbox("alice")
    for n in range(1, 6):
        box.append("INBOX", MSG % n)
    return box


def flags(box: SqliteMailbox) -> dict[int, frozenset[str]]:
    return {r.uid: r.flags for r in box.snapshot("INBOX").rows}


def test_expunges_exactly_the_given_uids_and_marks_the_others_seen(box: SqliteMailbox) -> None:
    box.set_flags("INBOX", [5], "+", ["\\Deleted"])  # an IMAP client's, not POP3's
    base = box.status("INBOX").highestmodseq
    assert box.delete_messages("INBOX", [1, 3, 99], also_seen=[2, 3]) == [1, 3]
    assert flags(box) == {
        2: frozenset({"\\Seen"}),
        4: frozenset(),
        5: frozenset({"\\Deleted"}),
    }
    changes = box.changes_since("INBOX", base)
    assert changes.vanished == [1, 3]
    assert [r.uid for r in changes.changed] == [2]
    assert changes.highestmodseq == base + 1 == changes.changed[0].modseq  # one MODSEQ


def test_already_seen_and_missing_messages_change_nothing(box: SqliteMailbox) -> None:
    box.set_flags("INBOX", [2], "+", ["\\Seen"])
    base = box.status("INBOX").highestmodseq
    assert box.delete_messages("INBOX", [42], also_seen=[2, 43]) == []
    assert box.status("INBOX").highestmodseq == base
    assert box.delete_messages("INBOX", []) == []


def test_bodies_are_removed_unless_a_copy_still_uses_them(box: SqliteMailbox) -> None:
    box.copy("INBOX", [2], "Archive")
    before = len(os.listdir(box.msgs))
    box.delete_messages("INBOX", [1, 2])
    assert len(os.listdir(box.msgs)) == before - 1
    assert box.read("Archive", 1) == MSG % 2
    with pytest.raises(StoreError):
        box.read("INBOX", 2)


def test_one_notification_and_no_deleted_flag_seen_in_between(box: SqliteMailbox) -> None:
    base = box.status("INBOX").highestmodseq
    seen_by_subscriber: list[api.Changes] = []
    unsubscribe = box.subscribe(lambda: seen_by_subscriber.append(box.changes_since("INBOX", base)))
    try:
        box.delete_messages("INBOX", [1, 4], also_seen=[2])
    finally:
        unsubscribe()
    assert len(seen_by_subscriber) == 1  # without a loop, subscribers run at each commit
    assert seen_by_subscriber[0].vanished == [1, 4]
    assert not any("\\Deleted" in r.flags for r in seen_by_subscriber[0].changed)


def test_a_cached_snapshot_follows_the_change(box: SqliteMailbox) -> None:
    assert [r.uid for r in box.snapshot("INBOX").rows] == [1, 2, 3, 4, 5]
    box.delete_messages("INBOX", [2], also_seen=[3])
    snap = box.snapshot("INBOX")
    assert [r.uid for r in snap.rows] == [1, 3, 4, 5]
    assert snap.status.messages == 4 and snap.status.unseen == 3
    assert box.check() == []


def test_unknown_folder(box: SqliteMailbox) -> None:
    with pytest.raises(NoSuchFolder):
        box.delete_messages("Nope", [1])


def test_a_failed_transaction_changes_nothing(box: SqliteMailbox, monkeypatch) -> None:
    def broken(*args: object) -> list[str]:
        raise StoreError("disk full")

    monkeypatch.setattr(box, "_release_bodies", broken)
    with pytest.raises(StoreError):
        box.delete_messages("INBOX", [1], also_seen=[2])
    assert flags(box) == {n: frozenset() for n in range(1, 6)}


def test_the_contracts_default_goes_through_the_deleted_flag(box: SqliteMailbox) -> None:
    box.set_flags("INBOX", [5], "+", ["\\Deleted"])
    assert api.MailboxStore.delete_messages(box, "INBOX", [1], also_seen=[2]) == [1]
    assert flags(box) == {
        2: frozenset({"\\Seen"}),
        3: frozenset(),
        4: frozenset(),
        5: frozenset({"\\Deleted"}),
    }
