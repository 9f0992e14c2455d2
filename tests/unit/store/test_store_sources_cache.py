"""The per-folder cache behind message_sources (server/store/sqlite/sources.py): after
every kind of change, by this store object or another one on the same files (as another
process would), a lookup gives exactly what the database holds: never an expunged
message, never another folder's message under a reused name, new messages included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.protocols.imap import bodystructure
from server.store import api
from server.store.sqlite import SqliteMailbox, SqliteMailStore, sources

MSG = b"From: a@example.com\r\nSubject: number %d\r\n\r\nbody %d\r\n"


def raw(n: int) -> bytes:
    return MSG % (n, n)


def header_of(data: bytes) -> bytes:
    return data[: bodystructure.analyze(data).header_len]


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    box = store.mailbox("alice")
    box.append_many("INBOX", [api.NewMessage(raw(n)) for n in range(1, 6)])
    return box


@pytest.fixture
def other(store: SqliteMailStore, tmp_path: Path) -> SqliteMailbox:
    """The same mailbox through a second store object: another process's view."""
    second = SqliteMailStore(tmp_path / "db")
    try:
        yield second.mailbox("alice")  # type: ignore[misc]
    finally:
        second.close()


def subjects(box: SqliteMailbox, folder: str = "INBOX", uids: range = range(1, 20)) -> dict:
    """uid -> (file content, header block) as message_sources gives them."""
    got = box.message_sources(folder, list(uids), header=True)
    return {uid: (Path(p or "").read_bytes(), h) for uid, (p, h, _) in got.items()}


def expect(numbers: dict[int, int]) -> dict:
    return {uid: (raw(n), header_of(raw(n))) for uid, n in numbers.items()}


def test_a_second_lookup_is_answered_from_the_cache(box: SqliteMailbox) -> None:
    assert subjects(box) == expect({n: n for n in range(1, 6)})
    cached = box._sources["INBOX"]
    assert sorted(cached.entries) == [1, 2, 3, 4, 5]
    assert subjects(box) == expect({n: n for n in range(1, 6)})
    # Paths alone, then headers of the same messages: the entries serve both.
    paths = box.message_sources("INBOX", [2, 4])
    assert {u: (Path(p or "").read_bytes(), h) for u, (p, h, _) in paths.items()} == {
        2: (raw(2), None),
        4: (raw(4), None),
    }


def test_expunge_drops_the_message(box: SqliteMailbox) -> None:
    subjects(box)
    box.set_flags("INBOX", [2, 4], "+", ["\\Deleted"])
    assert box.expunge("INBOX", [2]) == [2]
    assert subjects(box) == expect({1: 1, 3: 3, 4: 4, 5: 5})
    assert 2 not in box._sources["INBOX"].entries


def test_flag_changes_keep_the_entries(box: SqliteMailbox) -> None:
    subjects(box)
    box.set_flags("INBOX", [1, 2, 3], "+", ["\\Seen"])
    assert subjects(box) == expect({n: n for n in range(1, 6)})
    assert sorted(box._sources["INBOX"].entries) == [1, 2, 3, 4, 5]


def test_new_messages_are_looked_up(box: SqliteMailbox) -> None:
    subjects(box)
    box.append("INBOX", raw(6))
    assert subjects(box) == expect({n: n for n in range(1, 7)})


def test_another_process_expunging_and_appending(box: SqliteMailbox, other: SqliteMailbox) -> None:
    subjects(box)
    other.delete_messages("INBOX", [3])
    other.append("INBOX", raw(7))
    assert subjects(box) == expect({1: 1, 2: 2, 4: 4, 5: 5, 6: 7})


def test_moved_messages_leave_the_source_folder(box: SqliteMailbox) -> None:
    box.create_folder("Projects")
    subjects(box)
    subjects(box, "Projects")
    box.move("INBOX", [1, 2], "Projects")
    assert subjects(box) == expect({3: 3, 4: 4, 5: 5})
    assert subjects(box, "Projects") == expect({1: 1, 2: 2})


def test_a_folder_replaced_under_the_same_name(box: SqliteMailbox, other: SqliteMailbox) -> None:
    box.create_folder("Work")
    box.append_many("Work", [api.NewMessage(raw(n)) for n in (1, 2)])
    first = box.status("Work").uidvalidity
    assert subjects(box, "Work") == expect({1: 1, 2: 2})
    other.delete_folder("Work")
    assert box.message_sources("Work", [1, 2], header=True) == {}
    other.create_folder("Work")
    other.append("Work", raw(9))
    assert subjects(box, "Work") == expect({1: 9})
    # Asked with the old folder's UIDVALIDITY: nothing, not the new folder's message.
    assert box.message_sources("Work", [1], header=True, uidvalidity=first) == {}


def test_pruned_tombstones_start_the_folder_afresh(
    box: SqliteMailbox, other: SqliteMailbox
) -> None:
    subjects(box)
    other.delete_messages("INBOX", [1, 5])
    assert other.prune_tombstones(time.time() + 10) == 2
    assert subjects(box) == expect({2: 2, 3: 3, 4: 4})


def test_the_budget_drops_the_oldest_folder_whole(
    box: SqliteMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = sources.Budget(limit=3 * (sources.ENTRY_OVERHEAD + len(header_of(raw(1)))))
    monkeypatch.setattr(sources, "BUDGET_OF_PROCESS", budget)
    box.create_folder("Work")
    box.append_many("Work", [api.NewMessage(raw(n)) for n in (1, 2)])
    subjects(box, "Work")
    work = box._sources["Work"]
    assert len(work.entries) == 2
    subjects(box)  # five more entries: over the budget, Work goes, then INBOX itself
    assert work.dead and work.entries == {}
    assert budget.total <= budget.limit
    # Still right, from the database, and the folder is cached again.
    assert subjects(box, "Work") == expect({1: 1, 2: 2})
    assert not box._sources["Work"].dead
