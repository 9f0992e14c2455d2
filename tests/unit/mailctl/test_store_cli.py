"""mailctl import-mailbox / export-mailbox (and their Exchange spellings)."""

from __future__ import annotations

import os
from pathlib import Path

from server.settings.paths import Home
from server.store import open_store
from tests.unit.mailctl.cli_helpers import mailctl, ok

LF_MSG = b"From: a@example.com\nSubject: hi\n\nbody\n"


def maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
        (root / ".Work" / sub).mkdir(parents=True)
    (root / "cur" / "1600000000.M1P1.host:2,RS").write_bytes(LF_MSG)
    (root / ".Work" / "new" / "1600000001.M2P1.host").write_bytes(LF_MSG.replace(b"hi", b"w"))
    return root


def test_import_and_export_a_maildir(home: Home, tmp_path: Path) -> None:
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw pw pw pw\n")
    src = maildir(tmp_path / "src")
    got = ok(home, "import-mailbox", "alice", "--maildir", str(src), "-o", "json").json()
    assert {row["Folder"]: row["Messages"] for row in got} == {"INBOX": 1, "Work": 1}
    with open_store(home, "MBX01") as store:
        box = store.mailbox("alice")
        assert box.snapshot("INBOX").rows[0].flags == {"\\Seen", "\\Answered"}
        assert box.read("Work", 1).startswith(b"From: a@example.com\r\n")
    out = tmp_path / "out"
    ok(home, "export-mailbox", "alice@contoso.test", "--maildir", str(out))
    [name] = os.listdir(out / "cur")
    assert name.endswith(":2,RS") and (out / "cur" / name).read_bytes() == LF_MSG
    # Exporting into a folder that has files fails cleanly.
    again = mailctl(home, "export-mailbox", "alice", "--maildir", str(out))
    assert again.code == 1 and "not empty" in again.err


def test_exchange_spelling_imports_an_mbox(home: Home, tmp_path: Path) -> None:
    ok(home, "new-mailbox", "bob", "--password-stdin", stdin="pw pw pw pw\n")
    mbox = tmp_path / "old.mbox"
    mbox.write_bytes(b"From x@y Sat Jan  3 01:05:34 1996\n" + LF_MSG + b"\n")
    ok(
        home,
        "New-MailboxImportRequest",
        "-Mailbox",
        "bob",
        "-FilePath",
        str(mbox),
        "-TargetRootFolder",
        "Old",
    )
    with open_store(home, "MBX01") as store:
        assert store.mailbox("bob").read("Old", 1) == LF_MSG.replace(b"\n", b"\r\n")


def test_import_errors(home: Home, tmp_path: Path) -> None:
    assert mailctl(home, "import-mailbox", "nobody", "--mbox", str(tmp_path)).code == 1
    assert mailctl(home, "import-mailbox", "alice").code == 2
    ok(home, "new-mailbox", "carol", "--password-stdin", stdin="pw pw pw pw\n")
    (tmp_path / "empty").mkdir()
    bad = mailctl(home, "import-mailbox", "carol", "--maildir", str(tmp_path / "empty"))
    assert bad.code == 1 and "not a Maildir" in bad.err
