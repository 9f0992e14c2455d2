"""Maildir and mbox import, Maildir export: round trips keep every byte and every flag."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from server.store.api import StoreError
from server.store.maildir import (
    export_maildir,
    folder_to_maildir,
    import_maildir,
    import_mbox,
    maildir_to_folder,
    to_crlf,
)
from server.store.sqlite import SqliteMailbox, SqliteMailStore
from tests.conftest import corpus_paths

LF_MSG = b"From: a@example.com\nSubject: lf\n\nline one\nline two\n"
CRLF_MSG = b"From: a@example.com\r\nSubject: crlf\r\n\r\nbody\r\n"
MIXED_MSG = b"Subject: mixed\r\n\nbody\n"


def put(folder_dir: Path, sub: str, name: str, raw: bytes, mtime: int) -> None:
    for s in ("cur", "new", "tmp"):
        (folder_dir / s).mkdir(parents=True, exist_ok=True)
    path = folder_dir / sub / name
    path.write_bytes(raw)
    os.utime(path, (mtime, mtime))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A Dovecot-style Maildir++ tree."""
    root = tmp_path / "Maildir"
    corpus = corpus_paths()[:6]
    put(root, "cur", "1600000001.M1P1.host,S=10:2,S", LF_MSG, 1600000001)
    put(root, "cur", "1600000002.M2P1.host:2,FRSab", CRLF_MSG, 1600000002)
    put(root, "new", "1600000003.M3P1.host", MIXED_MSG, 1600000003)
    put(root, "cur", "1600000004.M4P1.host:2,DT", corpus[0].read_bytes(), 1600000004)
    (root / "tmp" / "1600000005.M5P1.host").write_bytes(b"half written")
    (root / "dovecot-keywords").write_text("0 $Label1\n1 Work\n")
    work = root / ".Work.2024"
    for n, path in enumerate(corpus[1:], start=10):
        put(work, "cur", f"16000000{n}.M{n}P1.host:2,S", path.read_bytes(), 1600000000 + n)
    (work / "maildirfolder").touch()
    put(root / ".Caf&AOk-", "cur", "1600000100.M100P1.host:2,", LF_MSG, 1600000100)
    (root / "subscriptions").write_text("Work.2024\n")
    return root


def rows(box: SqliteMailbox, folder: str) -> list[tuple[bytes, frozenset[str], datetime]]:
    return [(box.read(folder, r.uid), r.flags, r.internaldate) for r in box.snapshot(folder).rows]


def files(folder_dir: Path) -> list[tuple[bytes, str, int]]:
    got = []
    for sub in ("cur", "new"):
        for name in os.listdir(folder_dir / sub):
            path = folder_dir / sub / name
            info = name.partition(":2,")[2]
            got.append((path.read_bytes(), info, int(path.stat().st_mtime)))
    return sorted(got)


def test_import_maildir(store: SqliteMailStore, source: Path) -> None:
    box = store.mailbox("alice")
    report = import_maildir(box, source)
    assert report.folders == {"INBOX": 4, "Work/2024": 5, "Café": 1}
    assert report.messages == 10
    inbox = box.snapshot("INBOX").rows
    assert [r.flags for r in inbox] == [
        {"\\Seen"},
        {"\\Flagged", "\\Answered", "\\Seen", "$Label1", "Work"},
        set(),
        {"\\Draft", "\\Deleted"},
    ]
    assert [int(r.internaldate.timestamp()) for r in inbox] == [1600000001 + i for i in range(4)]
    # Bare LF became CRLF for IMAP; CRLF and mixed messages are kept as they are.
    assert box.read("INBOX", 1) == LF_MSG.replace(b"\n", b"\r\n")
    assert box.read("INBOX", 2) == CRLF_MSG
    assert box.read("INBOX", 3) == MIXED_MSG
    subscribed = {f.name: f.subscribed for f in box.folders()}
    assert subscribed["Work/2024"] and not subscribed["Café"] and not subscribed["Work"]
    assert store.check() == []


def test_maildir_round_trip_is_byte_identical(
    store: SqliteMailStore, source: Path, tmp_path: Path
) -> None:
    box = store.mailbox("alice")
    import_maildir(box, source)
    out = tmp_path / "export"
    report = export_maildir(box, out)
    assert report.folders["INBOX"] == 4 and report.warnings == []
    for src, dst in (
        (source, out),
        (source / ".Work.2024", out / ".Work.2024"),
        (source / ".Caf&AOk-", out / ".Caf&AOk-"),
    ):
        want = files(src)
        got = files(dst)
        # Flags letters are compared after the import's reading of them.
        assert [(raw, mtime) for raw, _, mtime in got] == [(raw, mtime) for raw, _, mtime in want]
    assert os.listdir(out / "tmp") == []
    assert (out / ".Work.2024" / "maildirfolder").exists()
    # And back in again: the same messages, flags and dates.
    again = store.mailbox("bob")
    import_maildir(again, out)
    for folder in ("INBOX", "Work/2024", "Café", "Archive"):
        assert rows(again, folder) == rows(box, folder)
    assert {f.name: f.subscribed for f in again.folders()} == {
        f.name: f.subscribed for f in box.folders()
    }


def test_export_keeps_uids_in_dovecot_uidlist(store: SqliteMailStore, tmp_path: Path) -> None:
    box = store.mailbox("alice")
    for n in range(3):
        box.append("INBOX", CRLF_MSG + b"%d\r\n" % n)
    box.set_flags("INBOX", [2], "+", ["\\Deleted"])
    box.expunge("INBOX")
    export_maildir(box, tmp_path / "out")
    lines = (tmp_path / "out" / "dovecot-uidlist").read_text().splitlines()
    assert lines[0].startswith("3 V") and lines[0].endswith(" N4")
    assert [line.split(" ")[0] for line in lines[1:]] == ["1", "3"]
    reimported = store.mailbox("carol")
    import_maildir(reimported, tmp_path / "out")
    assert [box.read("INBOX", 1), box.read("INBOX", 3)] == [
        reimported.read("INBOX", 1),
        reimported.read("INBOX", 2),
    ]


def test_export_of_many_keywords_warns(store: SqliteMailStore, tmp_path: Path) -> None:
    box = store.mailbox("alice")
    box.append("INBOX", CRLF_MSG, [f"kw{n}" for n in range(30)])
    report = export_maildir(box, tmp_path / "out")
    assert len(report.warnings) == 4


def test_import_into_a_folder(store: SqliteMailStore, source: Path) -> None:
    box = store.mailbox("alice")
    report = import_maildir(box, source, folder="Old/Dovecot")
    assert report.folders == {"Old/Dovecot": 4, "Old/Dovecot/Work/2024": 5, "Old/Dovecot/Café": 1}
    assert box.status("INBOX").messages == 0


def test_bad_sources(store: SqliteMailStore, tmp_path: Path) -> None:
    box = store.mailbox("alice")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError):
        import_maildir(box, tmp_path / "empty")
    (tmp_path / "notmbox").write_bytes(b"Subject: x\n\n")
    with pytest.raises(StoreError):
        import_mbox(box, tmp_path / "notmbox")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    with pytest.raises(StoreError):
        export_maildir(box, tmp_path / "full")


MBOX = (
    b"From alice@example.com Sat Jan  3 01:05:34 1996\n"
    b"From: alice@example.com\nSubject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Work\n"
    b"\n"
    b">From the start\n>>From quoted twice\nFrom not a separator (no blank line before)\n"
    b"\n"
    b"From bob@example.com Mon Feb 10 12:00:00 2020\n"
    b"From: bob@example.com\nSubject: two\n\nbody\n\n"
)


def test_import_mboxrd(store: SqliteMailStore, tmp_path: Path) -> None:
    (tmp_path / "mbox").write_bytes(MBOX)
    box = store.mailbox("alice")
    report = import_mbox(box, tmp_path / "mbox", folder="Imported")
    assert report.folders == {"Imported": 2}
    snap = box.snapshot("Imported").rows
    assert snap[0].flags == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"}
    assert snap[1].flags == set()
    assert snap[0].internaldate.astimezone().replace(tzinfo=None) == datetime(1996, 1, 3, 1, 5, 34)
    first = box.read("Imported", 1)
    assert first.endswith(
        b"\r\n\r\nFrom the start\r\n>From quoted twice\r\n"
        b"From not a separator (no blank line before)\r\n"
    )
    assert box.read("Imported", 2) == b"From: bob@example.com\r\nSubject: two\r\n\r\nbody\r\n"


def test_import_mboxo(store: SqliteMailStore, tmp_path: Path) -> None:
    (tmp_path / "mbox").write_bytes(MBOX)
    box = store.mailbox("alice")
    import_mbox(box, tmp_path / "mbox", mboxrd=False)
    assert b"\r\n>>From quoted twice\r\n" in box.read("INBOX", 1)


def test_folder_names() -> None:
    for name in ("Work", "Work/2024", "Café/Menü", "a.b/c", "R&D"):
        assert maildir_to_folder(folder_to_maildir(name)) == name
    assert folder_to_maildir("Work/2024") == ".Work.2024"
    assert maildir_to_folder(".INBOX.Sub") == "INBOX/Sub"


def test_to_crlf() -> None:
    assert to_crlf(b"a\nb\n") == (b"a\r\nb\r\n", True)
    assert to_crlf(b"a\r\nb\n") == (b"a\r\nb\n", False)
    assert to_crlf(b"no line end") == (b"no line end", False)
