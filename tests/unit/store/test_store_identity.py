"""Identities in the store are never reused after a delete: a body or folder id that came
back after an EXPUNGE or DELETE made the MessageInfo cached for the old message serve the
new one (its ENVELOPE, BODYSTRUCTURE and the byte offsets of its sections)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.backend.imap.fanout import IdleFanout
from server.protocols.imap import bodystructure
from server.store import api
from server.store.db import SCHEMA_VERSION, SqliteMailbox, SqliteMailStore
from tests.unit.backend.imap.test_imap_session import Client

FIRST = b"From: first@x.org\r\nTo: one@x.org\r\nSubject: FIRST\r\n\r\nfirst body\r\n"
SECOND = b"From: second@y.org\r\nTo: two@y.org\r\nSubject: SECOND\r\n\r\nsecond body, longer\r\n"


@pytest.fixture
def store(tmp_path: Path):
    with SqliteMailStore(tmp_path / "db") as s:
        yield s


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    return store.mailbox("alice")


def body_ids(box: SqliteMailbox) -> list[int]:
    with box.pool.conn() as c:
        return [r[0] for r in c.execute("SELECT id FROM bodies ORDER BY id")]


def expunge_all(box: SqliteMailbox, folder: str) -> None:
    uids = [r.uid for r in box.snapshot(folder).rows]
    box.set_flags(folder, uids, "+", ["\\Deleted"])
    box.expunge(folder)


def test_a_body_id_is_not_reused_after_expunge(box: SqliteMailbox) -> None:
    box.create_folder("zz2")
    box.append("zz2", FIRST)
    (first,) = body_ids(box)
    expunge_all(box, "zz2")
    box.append("zz2", SECOND)
    assert body_ids(box) == [first + 1]


def test_info_after_expunge_and_append_is_the_new_messages(box: SqliteMailbox) -> None:
    box.create_folder("zz2")
    box.append("zz2", FIRST)
    assert box.info("zz2", 1).subject == "FIRST"  # type: ignore[attr-defined]
    assert box.message_sources("zz2", [1], info=True)[1][2].subject == "FIRST"  # type: ignore[union-attr]
    expunge_all(box, "zz2")
    box.append("zz2", SECOND)
    expected = bodystructure.analyze(SECOND)
    for got in (box.info("zz2", 2), box.message_sources("zz2", [2], info=True)[2][2]):
        assert got.envelope == expected.envelope  # type: ignore[union-attr]
        assert got.bodystructure == expected.bodystructure  # type: ignore[union-attr]
        assert got.header_len == expected.header_len  # type: ignore[union-attr]


def test_info_after_delete_and_create_of_the_folder(box: SqliteMailbox) -> None:
    box.create_folder("zz3")
    box.append("zz3", FIRST)
    old_validity = box.status("zz3").uidvalidity
    assert box.message_sources("zz3", [1], info=True)[1][2].subject == "FIRST"  # type: ignore[union-attr]
    box.delete_folder("zz3")
    box.create_folder("zz3")
    assert box.status("zz3").uidvalidity != old_validity
    box.append("zz3", SECOND)
    got = box.message_sources("zz3", [1], header=True, info=True)[1]
    assert got[1] == SECOND[: bodystructure.analyze(SECOND).header_len]
    assert got[2].envelope == bodystructure.analyze(SECOND).envelope  # type: ignore[union-attr]
    assert box.info("zz3", 1).subject == "SECOND"  # type: ignore[attr-defined]


def test_a_folder_id_is_not_reused_after_delete(box: SqliteMailbox) -> None:
    box.create_folder("a")
    with box.pool.conn() as c:
        (old,) = c.execute("SELECT id FROM folders WHERE name='a'").fetchone()
    box.delete_folder("a")
    box.create_folder("b")
    with box.pool.conn() as c:
        assert c.execute("SELECT id FROM folders WHERE name='b'").fetchone()[0] > old


def test_session_fetch_and_search_after_expunge(store: SqliteMailStore) -> None:
    store.mailbox("alice")
    c = Client(store).login()  # type: ignore[arg-type]
    assert "a OK" in c("a CREATE zz2")
    c.select("zz2")
    c.send(b"b APPEND zz2 {%d+}\r\n%s\r\n" % (len(FIRST), FIRST))
    assert '"FIRST"' in c("f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[TEXT])")
    assert "* SEARCH 1\r\n" in c("s SEARCH FROM first")
    c("d STORE 1 +FLAGS.SILENT (\\Deleted)")
    c("e EXPUNGE")
    c.send(b"b APPEND zz2 {%d+}\r\n%s\r\n" % (len(SECOND), SECOND))
    out = c("f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[TEXT] RFC822.SIZE)")
    info = bodystructure.analyze(SECOND)
    assert "ENVELOPE " + info.envelope.decode() in out
    assert "BODYSTRUCTURE " + info.bodystructure.decode() in out
    assert "BODY[TEXT] {21}\r\nsecond body, longer\r\n" in out
    assert f"RFC822.SIZE {len(SECOND)}" in out
    for key, hit in [
        ("FROM first", False),
        ("FROM second", True),
        ("TO one", False),
        ("TO two", True),
        ("SUBJECT FIRST", False),
        ("SUBJECT SECOND", True),
        ("BODY longer", True),
        ("BODY first", False),
        ("TEXT y.org", True),
    ]:
        assert ("* SEARCH 1\r\n" in c(f"s SEARCH {key}")) is hit, key


def test_session_after_delete_and_create_of_the_folder(store: SqliteMailStore) -> None:
    store.mailbox("alice")
    c = Client(store).login()  # type: ignore[arg-type]
    c("a CREATE zz3")
    c.select("zz3")
    c.send(b"b APPEND zz3 {%d+}\r\n%s\r\n" % (len(FIRST), FIRST))
    assert '"FIRST"' in c("f FETCH 1 (ENVELOPE BODYSTRUCTURE)")
    c("u UNSELECT")
    assert "d OK" in c("d DELETE zz3")
    assert "a OK" in c("a CREATE zz3")
    c.select("zz3")
    c.send(b"b APPEND zz3 {%d+}\r\n%s\r\n" % (len(SECOND), SECOND))
    out = c("f FETCH 1 (ENVELOPE BODYSTRUCTURE)")
    info = bodystructure.analyze(SECOND)
    assert "ENVELOPE " + info.envelope.decode() in out
    assert "BODYSTRUCTURE " + info.bodystructure.decode() in out
    assert "* SEARCH 1\r\n" in c("s SEARCH FROM second")
    assert "* SEARCH\r\n" in c("s SEARCH SUBJECT FIRST")


def _downgrade_to_3(path: Path) -> None:
    """The tables as schema 3 made them: keys without AUTOINCREMENT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for table in ("folders", "bodies"):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
        conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
        conn.execute(sql.replace(" AUTOINCREMENT", ""))
        conn.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
        conn.execute(f"DROP TABLE old_{table}")
    conn.execute("DELETE FROM sqlite_sequence")
    conn.execute("PRAGMA user_version=3")
    conn.execute("COMMIT")
    conn.close()


def test_schema_3_databases_are_upgraded_in_place(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        box.create_folder("zz2")
        box.append_many("zz2", [api.NewMessage(FIRST), api.NewMessage(SECOND, ["\\Seen"])])
        before = box.snapshot("zz2")
        path = box.dir / "mailbox.db"
        ids = body_ids(box)
    _downgrade_to_3(path)
    conn = sqlite3.connect(path)
    assert (
        "AUTOINCREMENT"
        not in conn.execute("SELECT sql FROM sqlite_master WHERE name='bodies'").fetchone()[0]
    )
    conn.close()
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        with box.pool.conn() as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            for table in ("folders", "bodies"):
                sql = c.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()[
                    0
                ]
                assert "AUTOINCREMENT" in sql
            assert (
                c.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE '%v3%'").fetchone()[0]
                == 0
            )
        assert body_ids(box) == ids
        assert box.snapshot("zz2") == before
        assert box.read("zz2", 2) == SECOND
        assert box.check() == []
        box.set_flags("zz2", [2], "+", ["\\Deleted"])
        box.expunge("zz2")
        box.append("zz2", FIRST)
        assert body_ids(box) == [ids[0], ids[1] + 1]
        box.create_folder("more")
        assert box.check() == []
    with SqliteMailStore(tmp_path / "db") as s:  # opened again: nothing left to upgrade
        assert s.mailbox("alice").read("zz2", 3) == FIRST


def test_a_mailbox_created_again_never_reuses_uidvalidity(store: SqliteMailStore) -> None:
    box = store.mailbox("alice")
    for n in range(20):  # folders created faster than the clock: UIDVALIDITYs run ahead
        box.create_folder(f"f{n}")
    used = {f.name: box.status(f.name).uidvalidity for f in box.folders()}
    store.delete_mailbox("alice")
    again = store.mailbox("alice")
    again.create_folder("f0")
    fresh = {f.name: again.status(f.name).uidvalidity for f in again.folders()}
    assert min(fresh.values()) > max(used.values())
    store.delete_mailbox("alice")  # and once more: above the second one too
    assert min(
        s.uidvalidity for s in (store.mailbox("alice").status(f) for f in ("INBOX", "Archive"))
    ) > max(fresh.values())
    assert store.mailbox_names() == ["alice"] and store.check() == []


def _two_sessions(store: SqliteMailStore) -> tuple[Client, Client]:
    store.mailbox("alice")
    one = Client(store).login()  # type: ignore[arg-type]
    two = Client(store).login()  # type: ignore[arg-type]
    # One back-end process: the sessions share its MessageInfo cache.
    two.session.config.info_cache = one.session.config.info_cache
    return one, two


@pytest.mark.parametrize("replace", ["DELETE zz", "RENAME zz yy"])
def test_a_session_whose_folder_is_replaced_by_another_says_bye(
    store: SqliteMailStore, replace: str
) -> None:
    one, two = _two_sessions(store)
    one("a CREATE zz")
    one.select("zz")
    one.send(b"b APPEND zz {%d+}\r\n%s\r\n" % (len(FIRST), FIRST))
    assert '"FIRST"' in one("f FETCH 1 (ENVELOPE)")
    assert " OK" in two(f"d {replace}")
    assert "a OK" in two("a CREATE zz")
    two.send(b"b APPEND zz {%d+}\r\n%s\r\n" % (len(SECOND), SECOND))
    one.session.mark_dirty()  # the store's change notification
    out = one("f FETCH 1 (ENVELOPE BODY.PEEK[TEXT])")
    assert out.startswith("* BYE ") and "FETCH" not in out, out
    assert one.session.closed


def test_a_session_whose_folder_is_deleted_says_bye_in_idle(store: SqliteMailStore) -> None:
    one, two = _two_sessions(store)
    one("a CREATE zz")
    one.select("zz")
    assert "+ idling" in one("i IDLE").lower()
    two("d DELETE zz")
    one.session.mark_dirty()
    push = IdleFanout[object]().push(one.session, object)
    assert push is not None
    assert push.job.run().startswith(b"* BYE ") and one.session.closed


def test_a_session_whose_folder_is_deleted_says_bye_at_the_end_of_idle(
    store: SqliteMailStore,
) -> None:
    one, two = _two_sessions(store)
    one("a CREATE zz")
    one.select("zz")
    one("i IDLE")
    two("d DELETE zz")
    out = one("DONE")
    assert out.startswith("* BYE ") and one.session.closed


def test_message_sources_answer_only_for_the_folder_asked_about(box: SqliteMailbox) -> None:
    box.create_folder("zz")
    box.append("zz", FIRST)
    old = box.status("zz").uidvalidity
    assert set(box.message_sources("zz", [1], info=True, uidvalidity=old)) == {1}
    box.delete_folder("zz")
    box.create_folder("zz")
    box.append("zz", SECOND)
    assert box.message_sources("zz", [1], header=True, info=True, uidvalidity=old) == {}
    new = box.status("zz").uidvalidity
    got = box.message_sources("zz", [1], header=True, info=True, uidvalidity=new)[1]
    assert got[2].subject == "SECOND"  # type: ignore[union-attr]


def test_a_fetch_before_the_change_notification_never_mixes_folders(
    store: SqliteMailStore,
) -> None:
    """Another process replaced the folder and its notification has not arrived yet: the
    session still believes in the old folder, and answers from it only (or not at all)."""
    one, two = _two_sessions(store)
    one("a CREATE zz")
    one.select("zz")
    one.send(b"b APPEND zz {%d+}\r\n%s\r\n" % (len(FIRST), FIRST))
    assert '"FIRST"' in one("f FETCH 1 (ENVELOPE)")
    two("d DELETE zz")
    two("a CREATE zz")
    two.send(b"b APPEND zz {%d+}\r\n%s\r\n" % (len(SECOND), SECOND))
    one.session.dirty = False  # as if the notification were still on its way
    for items in ("BODY.PEEK[]", "BODYSTRUCTURE", "BODY.PEEK[HEADER]", "ENVELOPE BODY.PEEK[TEXT]"):
        out = one(f"f FETCH 1 ({items})")
        assert "SECOND" not in out and "second" not in out, (items, out)
    assert "* SEARCH\r\n" in one("s SEARCH BODY second")
    assert "* SEARCH\r\n" in one("s SEARCH SUBJECT SECOND")
