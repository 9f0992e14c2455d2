"""A large mailbox with a conversion format: the first IMAP open and the first POP3 login
after a restart (issue 17's scenario; goal: under 2 s each).

    python -m bench.textonly_open [--messages 20000] [--workdir DIR] [--exact]

One mailbox of N messages, each a multipart/alternative (text and HTML) that TextOnly
rewrites, MessageRetrievalMimeFormat TextOnly on IMAP4 and POP3, services restarted (empty
rendering caches), then, through the front ends:
- IMAP: LOGIN, SELECT INBOX and what a client sends to list a folder,
  `UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])`;
- POP3 (after another restart): USER/PASS and STAT, then LIST.
It also times the retrieval of one message on each protocol (rendered then, once).
`--exact` sets EnableExactRFC822Size $true, which asks for sizes of the rendered bytes:
every message is then rendered at the first open (that is what the option costs).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import poplib
import shutil
import sys
import time
from pathlib import Path

from bench.corpus import WORDS
from bench.ours import OurInstance
from bench.run import free_base

USER, PASSWORD = "big01", "bench-big01-secret"


def alternative(n: int) -> bytes:
    words = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(60))
    html = f"<html><body><p>{words}</p><p><b>{n}</b> {words}</p></body></html>"
    return (
        f"From: Sender {n % 97} <s{n % 97}@example.org>\r\n"
        f"To: Big <{USER}@contoso.test>\r\n"
        f"Subject: message {n} {WORDS[n % len(WORDS)]}\r\n"
        f"Date: Mon, 1 Jan 2024 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d} +0000\r\n"
        f"Message-ID: <big.{n}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{words}\r\n{n} {words}\r\n"
        "--b1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
        f"{html}\r\n"
        "--b1--\r\n"
    ).encode()


def timed(step):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = step()
    return round(time.perf_counter() - start, 3), result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.textonly_open",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/mailctl-bench-textonly"))
    p.add_argument("--exact", action="store_true")
    p.add_argument(
        "--format",
        default="TextOnly",
        help="MessageRetrievalMimeFormat (BestBodyFormat: the same folder unconverted)",
    )
    p.add_argument("--base-port", type=int, help="default: the first free range from 12000")
    args = p.parse_args(argv)

    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    ours = OurInstance(args.workdir, args.base_port or free_base())
    ours.create({USER: PASSWORD})
    fill = time.perf_counter()
    from server.settings.paths import Home
    from server.store import NewMessage, open_store

    store = open_store(Home.resolve(ours.home), "MBX01")
    try:
        box = store.mailbox(USER)
        for start in range(0, args.messages, 2000):
            box.append_many(
                "INBOX",
                [
                    NewMessage(alternative(n))
                    for n in range(start, min(start + 2000, args.messages))
                ],
            )
    finally:
        store.close()
    fill = time.perf_counter() - fill
    exact = ["--enable-exact-rfc822-size", "true" if args.exact else "false"]
    for command in ("set-imapsettings", "set-popsettings"):
        ours.mailctl(command, "--message-retrieval-mime-format", args.format, *exact)
    result: dict[str, object] = {
        "messages": args.messages,
        "format": args.format,
        "exact_sizes": args.exact,
        "fill_s": round(fill, 1),
    }
    ours.start()
    try:
        ours.restart()

        def imap_open() -> tuple[imaplib.IMAP4, int]:
            conn = imaplib.IMAP4("127.0.0.1", ours.imap_port)
            conn.login(USER, PASSWORD)
            conn.select("INBOX")
            typ, data = conn.uid(
                "FETCH",
                "1:*",
                "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
            )
            assert typ == "OK", data
            return conn, sum(1 for entry in data if isinstance(entry, tuple))

        result["imap_first_open_s"], (conn, listed) = timed(imap_open)
        result["imap_listed"] = listed
        result["imap_first_body_s"], _ = timed(lambda: conn.uid("FETCH", "7", "(BODY.PEEK[])"))
        conn.logout()
        result["imap_second_open_s"], (conn, _) = timed(imap_open)
        conn.logout()

        ours.restart()

        def pop_login() -> tuple[poplib.POP3, int]:
            conn = poplib.POP3("127.0.0.1", ours.pop3_port, timeout=120)
            conn.user(USER)
            conn.pass_(PASSWORD)
            return conn, conn.stat()[0]

        started = time.perf_counter()
        try:
            result["pop3_first_login_stat_s"], (pop, count) = timed(pop_login)
        except poplib.error_proto as refused:  # what a client sees when the login fails
            result["pop3_first_login_stat_s"] = round(time.perf_counter() - started, 3)
            result["pop3_error"] = str(refused)
        else:
            result["pop3_count"] = count
            result["pop3_list_s"], _ = timed(pop.list)
            result["pop3_first_retr_s"], _ = timed(lambda: pop.retr(7))
            pop.quit()
    finally:
        ours.stop()
    goal = 2.0
    result["goal_s"] = goal
    result["met"] = (
        result["imap_first_open_s"] < goal  # type: ignore[operator]
        and result["pop3_first_login_stat_s"] < goal  # type: ignore[operator]
        and "pop3_error" not in result
    )
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
