"""Change notification of the mailbox store: same process, other processes, no polling."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from server.store.sqlite import SqliteMailStore

MSG = b"Subject: hi\r\n\r\nhello\r\n"
ROOT = Path(__file__).resolve().parents[3]

# A writer in another process: waits for a line on stdin, then appends one message and
# reports the monotonic clock (system-wide on Linux) before and after the append.
WRITER = """
import sys, time
from pathlib import Path
from server.store.sqlite import SqliteMailStore
store = SqliteMailStore(Path(sys.argv[1]))
box = store.mailbox("alice")
box.status("INBOX")
print("ready", flush=True)
for line in sys.stdin:
    before = time.monotonic()
    box.append("INBOX", b"Subject: x\\r\\n\\r\\nx\\r\\n")
    print(before, time.monotonic(), flush=True)
store.close()
"""


def test_same_process_subscriber_is_woken_on_its_loop(tmp_path: Path) -> None:
    async def main() -> None:
        with SqliteMailStore(tmp_path) as store:
            box = store.mailbox("alice")
            woke = asyncio.Event()
            loop_thread: list[int] = []

            def changed() -> None:
                loop_thread.append(threading.get_ident())
                woke.set()

            unsubscribe = box.subscribe(changed)
            await asyncio.to_thread(box.append, "INBOX", MSG)
            await asyncio.wait_for(woke.wait(), 1)
            assert loop_thread == [threading.get_ident()]
            unsubscribe()
            woke.clear()
            await asyncio.to_thread(box.append, "INBOX", MSG)
            await asyncio.sleep(0)  # nothing may be queued: the subscriber is gone
            assert not woke.is_set()

    asyncio.run(main())


def test_other_mailboxes_do_not_wake_a_subscriber(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as store:
        calls: list[str] = []
        store.mailbox("alice").subscribe(lambda: calls.append("alice"))
        got_bob = threading.Event()
        store.mailbox("bob").subscribe(got_bob.set)
        store.mailbox("bob").append("INBOX", MSG)
        assert got_bob.wait(1)
        assert calls == []


def test_bursts_are_coalesced_and_the_last_change_is_seen(tmp_path: Path) -> None:
    async def main() -> None:
        with SqliteMailStore(tmp_path) as store, SqliteMailStore(tmp_path) as writer:
            box = store.mailbox("alice")
            seen: list[int] = []
            done = asyncio.Event()
            final = asyncio.get_running_loop().create_future()

            def changed() -> None:
                modseq = box.status("INBOX").highestmodseq
                seen.append(modseq)
                if final.done() and modseq >= final.result():
                    done.set()

            box.subscribe(changed)
            wbox = writer.mailbox("alice")

            def burst() -> int:
                for _ in range(30):
                    wbox.append("INBOX", MSG)
                return wbox.status("INBOX").highestmodseq

            final.set_result(await asyncio.to_thread(burst))
            changed()  # in case every wake-up ran before the result was known
            await asyncio.wait_for(done.wait(), 2)
            assert len(seen) <= 31

    asyncio.run(main())


def test_subscriber_in_another_process_is_woken_within_100ms(tmp_path: Path) -> None:
    db = tmp_path / "db"
    SqliteMailStore(db).close()
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        with SqliteMailStore(db) as store:
            woke = threading.Event()
            woke_at: list[float] = []

            def changed() -> None:
                woke_at.append(time.monotonic())
                woke.set()

            store.mailbox("alice").subscribe(changed)
            for _ in range(3):
                woke.clear()
                woke_at.clear()
                child.stdin.write("go\n")
                child.stdin.flush()
                assert woke.wait(2), "no notification from the other process"
                before, after = map(float, child.stdout.readline().split())
                # Latency from the commit: at most the append itself plus the hop.
                assert woke_at[0] - before < (after - before) + 0.1
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(10)


def test_stale_sockets_of_dead_processes_are_removed(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path) as store:
        notify = store.notifier.folder
        notify.mkdir(parents=True, exist_ok=True)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(str(notify / "1-dead.sock"))
        stale.close()  # as if killed: the file stays, nobody listens
        (notify / "2-gone.sock").touch()  # not even a socket
        store.mailbox("alice").append("INBOX", MSG)
        assert not (notify / "1-dead.sock").exists()


def test_long_database_paths_still_notify(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with SqliteMailStore(deep) as a, SqliteMailStore(deep) as b:
        woke = threading.Event()
        a.mailbox("alice").subscribe(woke.set)
        b.mailbox("alice").append("INBOX", MSG)
        assert woke.wait(1)
        assert len(str(a.notifier.folder)) > 108


def test_close_removes_the_socket(tmp_path: Path) -> None:
    store = SqliteMailStore(tmp_path)
    store.mailbox("alice").subscribe(lambda: None)
    assert [n for n in os.listdir(store.notifier.folder) if n.endswith(".sock")]
    store.close()
    assert not [n for n in os.listdir(store.notifier.folder) if n.endswith(".sock")]


def test_a_listing_of_peers_is_kept_only_once_the_folder_is_old(tmp_path: Path) -> None:
    """publish() reuses its listing of the other processes' sockets while the folder's
    mtime is unchanged, and only when that mtime was already old at the listing: a peer
    that binds later changes the mtime and is reached at once."""
    with SqliteMailStore(tmp_path) as one, SqliteMailStore(tmp_path) as two:
        notifier = one.notifier
        box = one.mailbox("alice")
        box.subscribe(lambda: None)  # its own socket: the folder is made and written
        box.append("INBOX", MSG)
        assert notifier._peers is None  # the folder was just written: listed every time
        old = time.time() - 60
        os.utime(notifier.folder, (old, old))
        box.append("INBOX", MSG)
        assert notifier._peers is not None  # listed, and kept
        got = threading.Event()
        two.mailbox("alice").subscribe(got.set)  # binds its socket: a new mtime
        box.append("INBOX", MSG)
        assert got.wait(2)
