"""MailboxStore.body_paths: the files of many messages in one lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.store import api
from server.store.api import NoSuchFolder
from server.store.sqlite import SqliteMailbox, SqliteMailStore, pool

MSG = b"Subject: %d\r\n\r\nbody\r\n"


@pytest.fixture
def box(tmp_path: Path):
    with SqliteMailStore(tmp_path / "db") as store:
        box = store.mailbox("alice")
        for n in range(1, 6):
            box.append("INBOX", MSG % n)
        yield box


def test_paths_of_the_existing_messages_among_the_uids(box: SqliteMailbox) -> None:
    box.delete_messages("INBOX", [2])
    paths = box.body_paths("INBOX", [1, 2, 3, 99])
    assert sorted(paths) == [1, 3]
    assert paths[3].read_bytes() == MSG % 3 == box.read("INBOX", 3)
    assert paths[1] == box.body_path("INBOX", 1)
    assert box.body_paths("INBOX", []) == {}


@pytest.mark.parametrize("chunk", [2, 1])  # IN (...) chunks, then a folder scan
def test_many_uids(box: SqliteMailbox, monkeypatch, chunk: int) -> None:
    monkeypatch.setattr(pool, "IN_CHUNK", chunk)
    paths = box.body_paths("INBOX", [5, 4, 3, 2, 1])
    assert {uid: p.read_bytes() for uid, p in paths.items()} == {n: MSG % n for n in range(1, 6)}


def test_a_copy_shares_the_file(box: SqliteMailbox) -> None:
    box.copy("INBOX", [4], "Archive")
    assert box.body_paths("Archive", [1])[1] == box.body_paths("INBOX", [4])[4]


def test_unknown_folder_and_the_contracts_default(box: SqliteMailbox) -> None:
    with pytest.raises(NoSuchFolder):
        box.body_paths("Nope", [1])
    assert api.MailboxStore.body_paths(box, "INBOX", [1]) == {}


def test_the_body_folder_is_synced_through_one_kept_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pool.sync_folder opens the folder once and keeps it; a trim while a thread is in
    its fsync leaves that descriptor open until the fsync is done (closed under it, the
    number could name another file by then), and closes it after."""
    folder = tmp_path / "msgs"
    folder.mkdir()
    p = pool.Pool(tmp_path / "mailbox.db", folder=folder)
    opened: list[int] = []
    real_open, real_fsync = pool.os.open, pool.os.fsync

    def counting_open(path, flags, *args):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, *args)
        opened.append(fd)
        return fd

    monkeypatch.setattr(pool.os, "open", counting_open)
    p.sync_folder()
    p.sync_folder()
    assert len(opened) == 1

    synced: list[int] = []

    def trimmed_meanwhile(fd: int) -> None:
        p.trim()  # another thread's trim, while this one syncs
        pool.os.fstat(fd)  # still open
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(pool.os, "fsync", trimmed_meanwhile)
    p.sync_folder()
    assert synced == opened
    assert p._folder_fd is None  # closed by its last user
    monkeypatch.setattr(pool.os, "fsync", real_fsync)
    p.sync_folder()  # opened again when needed
    assert len(opened) == 2
    p.close()
    assert p._folder_fd is None
