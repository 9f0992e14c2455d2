"""kill -9 in the middle of a burst of writes: everything acknowledged survives.

A child process appends, flags, copies and expunges as fast as it can and prints each
change after the store returned (= what a server would have acknowledged). The parent
kills it with SIGKILL at a random moment, reopens the database and checks that every
acknowledged change is there, that no half message is visible and that check() passes.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.store.sqlite import SqliteMailStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import hashlib, sys
from pathlib import Path
from server.store import SqliteMailStore, NewMessage

def message(n):
    # Sizes from tiny to ~45 KB so a kill can land inside a body write.
    filler = hashlib.sha256(b"%d" % n).hexdigest().encode() * (1 + (n * 37) % 700)
    return b"Subject: m%d\\r\\n\\r\\n" % n + filler + b"\\r\\n"

store = SqliteMailStore(Path(sys.argv[1]))
box = store.mailbox("alice")
n = int(sys.argv[2])
print("ready", flush=True)
while n < int(sys.argv[2]) + 5000:
    if n % 11 == 0:
        results = box.append_many("INBOX", [NewMessage(message(n)), NewMessage(message(n + 1))])
        print("A", results[0].uid, n, flush=True)
        print("A", results[1].uid, n + 1, flush=True)
        n += 2
        continue
    uid = box.append("INBOX", message(n)).uid
    print("A", uid, n, flush=True)
    box.set_flags("INBOX", [uid], "+", ["k%d" % n, "\\\\Seen"])
    print("F", uid, n, flush=True)
    if n % 4 == 0:
        dest = box.copy("INBOX", [uid], "Archive").mapping[0][1]
        print("C", dest, n, flush=True)
    if n % 6 == 1:
        box.set_flags("INBOX", [uid], "+", ["\\\\Deleted"])
        box.expunge("INBOX", [uid])
        print("X", uid, n, flush=True)
    n += 1
"""


def message(n: int) -> bytes:
    filler = hashlib.sha256(b"%d" % n).hexdigest().encode() * (1 + (n * 37) % 700)
    return b"Subject: m%d\r\n\r\n" % n + filler + b"\r\n"


def run_until_killed(db: Path, start: int, lines: int, delay: float) -> list[list[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(start)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        acked = [child.stdout.readline() for _ in range(lines)]
        # The child is busy with its next change by now; a random pause moves the kill
        # to a random point inside it (not a wait for anything: the point of the test).
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # What it printed before dying was acknowledged too. A line the kill cut short
        # (its pipe buffer was flushed mid-line) never fully reached us: it does not count.
        acked += child.stdout.read().splitlines(keepends=True)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return [line.split() for line in acked if line.endswith("\n") and line.strip()]


def test_acknowledged_changes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "db"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    inbox: dict[int, int] = {}  # UID -> message number, acknowledged and not expunged
    flagged: dict[int, int] = {}
    archive: dict[int, int] = {}
    start = 0
    for _ in range(6):
        acked = run_until_killed(db, start, rng.randrange(5, 120), rng.uniform(0, 0.015))
        for line in acked:
            assert len(line) == 3, f"unexpected output {line} (seed {seed})"
            what, uid_text, n_text = line
            uid, n = int(uid_text), int(n_text)
            if what == "A":
                inbox[uid] = n
            elif what == "F":
                flagged[uid] = n
            elif what == "C":
                archive[uid] = n
            elif what == "X":
                inbox.pop(uid, None)
                flagged.pop(uid, None)
            start = max(start, n + 2)
        with SqliteMailStore(db) as store:
            box = store.mailbox("alice")
            assert store.check() == [], f"seed {seed}"
            rows = {r.uid: r for r in box.snapshot("INBOX").rows}
            for uid, n in inbox.items():
                if n % 6 == 1 and uid not in rows:
                    continue  # its expunge ran but the child died before saying so
                assert uid in rows, f"acknowledged append of m{n} lost (seed {seed})"
                assert box.read("INBOX", uid) == message(n)
            for uid, n in flagged.items():
                if uid in rows or n % 6 != 1:
                    assert {f"k{n}", "\\Seen"} <= rows[uid].flags, f"seed {seed}"
            for uid, n in archive.items():
                assert box.read("Archive", uid) == message(n), f"seed {seed}"
            # No half messages: whatever is visible is a complete message.
            for uid in rows:
                raw = box.read("INBOX", uid)
                n = int(raw.split(b"\r\n")[0].removeprefix(b"Subject: m"))
                assert raw == message(n)
            assert box.status("INBOX").uidnext > max(rows, default=0)
            box.append("Drafts", b"Subject: after\r\n\r\nx\r\n")  # still writable
