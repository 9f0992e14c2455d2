"""SORT and THREAD on a large folder: python -m bench.sort_thread [--messages 20000]

Builds a mailbox database with one folder of N messages (threads of replies with Re:/Fwd:
subjects, References, several senders, dates over a year) in a scratch folder, then runs
the IMAP back end's session (server.backend.imap.session, the code the back-end service
runs per connection) over that real SQLite store and times each command, as a webmail
sends them at a folder open:

- cold: with nothing held by the process (sort keys read from the mailbox database), as
  the first SORT after the back end started;
- changed: a message arrived since the last time, so the answer is computed again (the
  keys of the other messages are held by the process);
- repeat: the same command on the same messages (the answer is reused), a folder opened
  again;
- after upgrade: the first SORT on a database whose messages have no stored keys yet
  (a database from before schema 4: the keys are computed from each header once, then kept).

The figures are the server's own work (parse, search, sort, format), without the socket.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.backend.imap.commands import TABLE
from server.backend.imap.commands import sortthread as sort_commands
from server.backend.imap.session import ImapSession, Login, SessionConfig
from server.settings.models import default_settings
from server.store.api import NewMessage
from server.store.db import SqliteMailStore

COMMANDS = [
    "UID SORT (REVERSE DATE) UTF-8 ALL",
    "UID SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "UID SORT (SUBJECT) UTF-8 ALL",
    "UID SORT (FROM) UTF-8 ALL",
    "UID SORT (SIZE) UTF-8 ALL",
    "UID SORT (DISPLAYFROM REVERSE DATE) UTF-8 NOT DELETED",
    "UID SORT RETURN (PARTIAL 1:50) (REVERSE DATE) UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
]
WORDS = (
    "budget plans meeting report lunch release review invoice travel party notes "
    "update question draft launch contract"
).split()


def messages(n: int, seed: int = 5256) -> list[NewMessage]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    threads: list[tuple[str, list[str]]] = []
    for i in range(n):
        date = start + timedelta(minutes=26 * i + rng.randrange(20))
        sender = rng.randrange(200)
        if threads and rng.random() < 0.6:
            subject, ids = rng.choice(threads[-300:])
            prefix = rng.choice(["Re: ", "RE: ", "Re: Re: ", "Fwd: ", "[list] Re: "])
            refs = "References: " + " ".join(f"<{x}>" for x in ids[-10:]) + "\r\n"
        else:
            subject = " ".join(rng.sample(WORDS, 3)).capitalize() + f" {i}"
            prefix, refs, ids = "", "", []
            threads.append((subject, ids))
        mid = f"{i}.{seed}@bench.test"
        ids.append(mid)
        head = (
            f"From: User {sender} <user{sender}@bench.test>\r\n"
            f"To: team{rng.randrange(20)}@bench.test\r\n"
            f"Subject: {prefix}{subject}\r\n"
            f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <{mid}>\r\n{refs}"
        )
        body = "x" * rng.randrange(200, 4000)
        out.append(NewMessage((head + "\r\n" + body + "\r\n").encode(), (), date))
    return out


def session(store: SqliteMailStore) -> ImapSession:
    settings = default_settings()
    mailbox = store.mailbox("bench")
    s = ImapSession(
        SessionConfig(lambda: settings, "MBX01", lambda *a: Login("bench", mailbox)), TABLE
    )
    run(
        s,
        "a AUTHENTICATE PLAIN "
        + __import__("base64").b64encode(b"bench\0mailctl-proxy\0x").decode(),
    )
    run(s, "s SELECT Bench")
    return s


def run(s: ImapSession, line: str) -> tuple[float, bytes]:
    """Wall-clock seconds and output of one command; CPU seconds in LAST_CPU."""
    global LAST_CPU
    t, c = time.perf_counter(), time.process_time()
    s.receive(line.encode() + b"\r\n")
    out = []
    while (job := s.next_job()) is not None:
        out.append(job.run())
    LAST_CPU = time.process_time() - c
    return time.perf_counter() - t, b"".join(out)


LAST_CPU = 0.0


def cell(wall: float | list[float], cpu: float | list[float]) -> str:
    w = statistics.median(wall) if isinstance(wall, list) else wall
    c = statistics.median(cpu) if isinstance(cpu, list) else cpu
    return f"{w * 1000:6.0f} ({c * 1000:4.0f})"


def fresh() -> None:
    """Forget what the process holds (keys, answers): as a back end just started."""
    sort_commands.KEYS = sort_commands.KeysCache()
    sort_commands.RESULTS = sort_commands.ResultCache()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.sort_thread",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5, help="warm runs per command")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a temp folder)")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mailctl-sortbench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        t = time.perf_counter()
        with SqliteMailStore(work) as store:
            box = store.mailbox("bench")
            box.create_folder("Bench")
            batch = messages(args.messages)
            for i in range(0, len(batch), 1000):
                box.append_many("Bench", batch[i : i + 1000])
            db = box.dir / "mailbox.db"
        print(f"built a {args.messages}-message folder in {time.perf_counter() - t:.1f} s")
        print(
            "milliseconds, wall clock (CPU time of the process in parentheses: on a busy"
            " machine the wall clock also counts waiting for a core)"
        )
        print(f"{'command':58} {'cold':>14} {'changed':>14} {'repeat':>14}")
        with SqliteMailStore(work) as store:
            s = session(store)
            for n_cmd, cmd in enumerate(COMMANDS):
                fresh()
                cold, out = run(s, "t " + cmd)
                cold_cpu = LAST_CPU
                assert b"t OK" in out, out[-200:]
                changed, changed_cpu, repeat, repeat_cpu = [], [], [], []
                for raw in messages(args.repeat, seed=len(cmd) + n_cmd):
                    s.store.append("Bench", raw.raw, (), raw.internaldate)
                    s.mark_dirty()
                    changed.append(run(s, "t " + cmd)[0])
                    changed_cpu.append(LAST_CPU)
                for _ in range(args.repeat):
                    repeat.append(run(s, "t " + cmd)[0])
                    repeat_cpu.append(LAST_CPU)
                print(
                    f"{cmd:58} {cell(cold, cold_cpu)} {cell(changed, changed_cpu)}"
                    f" {cell(repeat, repeat_cpu)}"
                )
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM sortkeys")
        with SqliteMailStore(work) as store:
            s = session(store)
            fresh()
            first, out = run(s, "t UID SORT (REVERSE DATE) UTF-8 ALL")
            first_cpu = LAST_CPU
        with SqliteMailStore(work) as store:
            s = session(store)
            fresh()
            again, _ = run(s, "t UID SORT (REVERSE DATE) UTF-8 ALL")
            again_cpu = LAST_CPU
        print(
            f"after upgrade (no stored keys): first SORT {cell(first, first_cpu).strip()}"
            f" (computes and keeps the keys), next process {cell(again, again_cpu).strip()}"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
