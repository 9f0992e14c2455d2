"""MailboxStore.message_sources: what FETCH needs of many messages (file paths, header
blocks, MessageInfos) in one lookup; header blocks kept at delivery, MessageInfos at
delivery (big messages) or on first use (small ones), header blocks filled in for databases
written before (schema 2) without reading more than the header."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.mail.mime import header_end
from server.protocols.imap import bodystructure
from server.store import api
from server.store.sqlite import SCHEMA_VERSION, SqliteMailbox, SqliteMailStore, pool

MSG = b"From: a@example.com\r\nSubject: number %d\r\nX-Long: folded\r\n  on\r\n\r\nbody %d\r\n"


def raw(n: int) -> bytes:
    return MSG % (n, n)


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    box = store.mailbox("alice")
    box.append_many("INBOX", [api.NewMessage(raw(n)) for n in range(1, 11)])
    return box


def header_of(data: bytes) -> bytes:
    return data[: bodystructure.analyze(data).header_len]


def test_paths_headers_and_infos_of_the_existing_messages(box: SqliteMailbox) -> None:
    box.delete_messages("INBOX", [2])
    got = box.message_sources("INBOX", [3, 1, 2, 99], header=True, info=True)
    assert sorted(got) == [1, 3]
    path, head, info = got[3]
    assert path is not None and Path(path).read_bytes() == raw(3)
    assert head == header_of(raw(3)) and head.endswith(b"  on\r\n\r\n")
    assert isinstance(info, bodystructure.MessageInfo) and info.header_len == len(head)
    assert box.message_sources("INBOX", []) == {}


def test_only_what_was_asked_for(box: SqliteMailbox) -> None:
    path, head, info = box.message_sources("INBOX", [4])[4]
    assert Path(path or "").read_bytes() == raw(4) and head is None and info is None
    assert box.message_sources("INBOX", [4], info=True)[4][1] is None
    assert box.message_sources("INBOX", [4], header=True)[4][2] is None


@pytest.mark.parametrize(
    "uids",
    [
        list(range(1, 11)),  # one dense range: BETWEEN
        [1, 3, 5, 9],  # a dense-enough range with holes, filtered
        [1, 10_000],  # sparse: IN lists
    ],
)
def test_dense_and_sparse_uid_sets(box: SqliteMailbox, monkeypatch, uids: list[int]) -> None:
    monkeypatch.setattr(pool, "IN_CHUNK", 1)
    got = box.message_sources("INBOX", uids, header=True)
    wanted = [u for u in uids if u <= 10]
    assert sorted(got) == wanted
    assert all(got[u][1] == header_of(raw(u)) for u in wanted)


def test_unknown_folder_gives_nothing(box: SqliteMailbox) -> None:
    assert box.message_sources("Nope", [1], header=True) == {}
    assert box.message_sources("inbox", [1])  # INBOX in any case


def test_a_copy_shares_the_header_block(box: SqliteMailbox) -> None:
    box.copy("INBOX", [5], "Archive")
    assert box.message_sources("Archive", [1], header=True)[1][1] == header_of(raw(5))


def test_schema_2_databases_are_upgraded_and_headers_filled_lazily(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        box.append_many("INBOX", [api.NewMessage(raw(n)) for n in range(1, 4)])
        path = box.dir / "mailbox.db"
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE bodies DROP COLUMN header")
    conn.execute("UPDATE bodies SET info=NULL WHERE id=(SELECT body FROM messages WHERE uid=3)")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        with box.pool.conn() as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert c.execute("SELECT count(header) FROM bodies").fetchone()[0] == 0
        got = box.message_sources("INBOX", [1, 2, 3], header=True)
        assert {u: h for u, (_, h, _) in got.items()} == {n: header_of(raw(n)) for n in (1, 2, 3)}
        with box.pool.conn() as c:  # kept: the next FETCH reads no file
            assert c.execute("SELECT count(header), count(info) FROM bodies").fetchone() == (3, 3)
        for _, (file, _, _) in got.items():
            os.unlink(file or "")
        assert box.message_sources("INBOX", [1, 2, 3], header=True)[2][1] == header_of(raw(2))
        assert box.check() != []  # the files are gone; the headers were not read from them


def test_a_file_gone_before_its_header_was_filled_counts_as_expunged(box: SqliteMailbox) -> None:
    with box.pool.conn() as c:
        c.execute("UPDATE bodies SET header=NULL")
    paths = box.body_paths("INBOX", [1, 2])
    os.unlink(paths[1])
    got = box.message_sources("INBOX", [1, 2], header=True)
    assert sorted(got) == [2] and got[2][1] == header_of(raw(2))


def test_the_contracts_default_reads_each_message(box: SqliteMailbox) -> None:
    got = api.MailboxStore.message_sources(box, "INBOX", [2, 7, 99], header=True, info=True)
    assert sorted(got) == [2, 7]
    assert got[7][1] == header_of(raw(7))
    assert isinstance(got[7][2], bodystructure.MessageInfo)
    assert Path(got[2][0] or "").read_bytes() == raw(2)


def test_filling_in_never_waits_for_another_writer(box: SqliteMailbox) -> None:
    with box.pool.conn() as c:
        c.execute("UPDATE bodies SET header=NULL")
    other = sqlite3.connect(box.dir / "mailbox.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a delivery holding the write lock
    try:
        started = time.monotonic()
        got = box.message_sources("INBOX", [1, 2], header=True)
        assert time.monotonic() - started < 5  # not the 30 s busy timeout
        assert got[2][1] == header_of(raw(2))
    finally:
        other.execute("ROLLBACK")
        other.close()
    with box.pool.conn() as c:
        assert c.execute("SELECT count(header) FROM bodies").fetchone()[0] == 0
    box.message_sources("INBOX", [1, 2], header=True)
    with box.pool.conn() as c:
        assert c.execute("SELECT count(header) FROM bodies").fetchone()[0] == 2
        assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again


# --- analysis on first use (writes.ANALYZE_FROM) ----------------------------------------------


def _stored(box: SqliteMailbox) -> list[tuple[int, bool, bool, bool]]:
    """(body id, has info, has header, has sort keys) of every body."""
    with box.pool.conn() as c:
        return [
            (r[0], r[1] is not None, r[2] is not None, r[3] is not None)
            for r in c.execute(
                "SELECT b.id, b.info, b.header, s.body FROM bodies b"
                " LEFT JOIN sortkeys s ON s.body = b.id ORDER BY b.id"
            )
        ]


@pytest.fixture
def one_by_one(store: SqliteMailStore) -> SqliteMailbox:
    """Ten messages appended one at a time, as APPEND and delivery store them."""
    box = store.mailbox("bob")
    for n in range(1, 11):
        box.append("INBOX", raw(n))
    return box


def test_a_small_message_is_analyzed_on_first_use_and_kept(one_by_one: SqliteMailbox) -> None:
    box = one_by_one
    # Stored with its header block, without MIME analysis or sort keys.
    assert [row[1:] for row in _stored(box)] == [(False, True, False)] * 10
    got = box.message_sources("INBOX", [2, 3], header=True)
    assert got[2][1] == header_of(raw(2)) and got[3][1] == header_of(raw(3))
    assert not any(info for _, info, _, _ in _stored(box))  # header fields need no analysis
    box.message_sources("INBOX", [2, 3], info=True)
    assert {b for b, info, _, _ in _stored(box) if info} == {2, 3}
    # What the first reader kept is what analyzing at APPEND would have kept.
    box._infos.clear()
    assert box.info("INBOX", 3) == bodystructure.analyze(raw(3))
    keys = box.sort_keys("INBOX", [1, 4])
    assert [k.subject for k in keys.values()] == ["NUMBER 1", "NUMBER 4"]  # type: ignore[attr-defined]
    assert {b for b, *_, has_keys in _stored(box) if has_keys} == {1, 4}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" ", b"--", b"X: y\r\n"])))
def test_the_header_block_kept_at_append_ends_where_the_analyzer_says(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert header_end(data) == bodystructure.analyze(data).header_len


def test_a_big_message_is_analyzed_when_stored(box: SqliteMailbox) -> None:
    from server.store.sqlite.writes import ANALYZE_FROM

    big = raw(11) + b"x" * ANALYZE_FROM + b"\r\n"
    box.append("INBOX", big)
    assert _stored(box)[-1][1:] == (True, True, True)
    assert box.message_sources("INBOX", [11], header=True)[11][1] == header_of(big)


def test_a_batch_is_analyzed_as_it_is_stored(box: SqliteMailbox) -> None:
    # An import or a move: nobody waits on it message by message, and the folder's first
    # SORT then finds every key there.
    assert [row[1:] for row in _stored(box)] == [(True, True, True)] * 10


def test_one_transaction_keeps_what_a_first_fetch_analyzed(
    one_by_one: SqliteMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = one_by_one
    kept: list[int] = []
    keep = box._keep

    def counting(*changes: tuple[str, list[tuple]]) -> None:
        kept.append(sum(len(rows) for _, rows in changes))
        keep(*changes)

    monkeypatch.setattr(box, "_keep", counting)
    box.message_sources("INBOX", list(range(1, 11)), header=True, info=True)
    assert kept == [10]  # the ten analyses in one commit, not ten
    assert all(info and head for _, info, head, _ in _stored(box))
