"""Several processes on one mailbox at once: nothing lost, UIDs unique, locks die with them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server.store.api import MailboxInUse
from server.store.sqlite import SqliteMailStore

ROOT = Path(__file__).resolve().parents[3]

# Each worker appends messages, flags each one with its own keyword, copies every fifth to
# Archive and expunges every seventh; it prints what it was told succeeded.
WORKER = """
import sys
from pathlib import Path
from server.store.sqlite import SqliteMailStore
db, me, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with SqliteMailStore(db) as store:
    box = store.mailbox("shared")
    for i in range(count):
        raw = b"Subject: %s-%d\\r\\n\\r\\nbody\\r\\n" % (me.encode(), i)
        uid = box.append("INBOX", raw).uid
        box.set_flags("INBOX", [uid], "+", [me, "\\\\Seen"])
        if i % 5 == 0:
            box.copy("INBOX", [uid], "Archive")
        if i % 7 == 3:
            box.set_flags("INBOX", [uid], "+", ["\\\\Deleted"])
            box.expunge("INBOX", [uid])
            print("gone", uid, flush=True)
        else:
            print("kept", uid, flush=True)
"""

LOCKER = """
import sys, time
from pathlib import Path
from server.store.sqlite import SqliteMailStore
store = SqliteMailStore(Path(sys.argv[1]))
store.mailbox("shared").lock_maildrop()
print("locked", flush=True)
sys.stdin.read()
"""


def test_four_processes_append_and_flag_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "db"
    SqliteMailStore(db).close()
    count = 20
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), f"w{n}", str(count)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0]
    kept: dict[int, str] = {}
    gone: set[int] = set()
    for n, out in enumerate(outputs):
        for line in out.splitlines():
            what, uid = line.split()
            if what == "kept":
                assert int(uid) not in kept, "a UID was handed out twice"
                kept[int(uid)] = f"w{n}"
            else:
                gone.add(int(uid))
    assert len(kept) + len(gone) == 4 * count
    assert not set(kept) & gone
    with SqliteMailStore(db) as store:
        box = store.mailbox("shared")
        snap = box.snapshot("INBOX")
        assert [r.uid for r in snap.rows] == sorted(kept)
        assert snap.status.uidnext == 4 * count + 1
        for row in snap.rows:
            subject = box.read("INBOX", row.uid).split(b"\r\n")[0].decode()
            assert subject.startswith(f"Subject: {kept[row.uid]}-")
            assert row.flags == {kept[row.uid], "\\Seen"}
        modseqs = [r.modseq for r in snap.rows]
        assert len(set(modseqs)) == len(modseqs)  # every change took its own MODSEQ
        assert box.status("Archive").messages == 4 * len(range(0, count, 5))
        assert box.changes_since("INBOX", 0).vanished == sorted(gone)
        assert store.check() == []


def test_a_killed_process_releases_the_maildrop_lock(tmp_path: Path) -> None:
    db = tmp_path / "db"
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        with SqliteMailStore(db) as store:
            box = store.mailbox("shared")
            with pytest.raises(MailboxInUse):
                box.lock_maildrop()
            locker.send_signal(signal.SIGKILL)
            locker.wait(10)
            box.lock_maildrop()()
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
