"""The messages both servers are filled with.

- "4k": synthetic text/plain messages of exactly 4,096 bytes (CRLF line ends);
- "cpython": the real-world messages of the CPython email test suite (shared/corpus), repeated
  in order until the mailbox is full - sizes from 0.3 KB to tens of KB, multipart, some
  deliberately malformed.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "cpython-email"
WORDS = (
    "mail server message folder client header body account login quota archive invoice "
    "meeting report schedule project draft review update release notes budget travel"
).split()
_BARE_LF = re.compile(rb"(?<!\r)\n")


def synthetic_message(key: str, size: int = 4096, seed: int = 0) -> bytes:
    """A plausible text/plain message of exactly `size` bytes, the same for the same args."""
    rng = random.Random(f"{key}/{seed}")
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))
    sender = f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@example.org"
    head = (
        f"Return-Path: <{sender}>\r\n"
        f"From: {rng.choice(WORDS).title()} Sender <{sender}>\r\n"
        f"To: Bench User <bench@contoso.test>\r\n"
        f"Subject: {' '.join(rng.choice(WORDS) for _ in range(6))}\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"Message-ID: <{key}.{seed}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    lines: list[bytes] = []
    room = size - len(head)
    while room > 76:  # a line of at most 74 bytes leaves room >= 3 for the last one
        text = " ".join(rng.choice(WORDS) for _ in range(12))[: rng.randint(40, 72)].rstrip()
        lines.append(text.encode() + b"\r\n")
        room -= len(text) + 2
    lines.append(b"-" * (room - 2) + b"\r\n")
    return head + b"".join(lines)


def cpython_messages() -> list[bytes]:
    """The corpus messages with CRLF line ends, in file-name order."""
    return [
        _BARE_LF.sub(b"\r\n", path.read_bytes()) for path in sorted(CORPUS_DIR.glob("msg_*.txt"))
    ]


def mailbox_messages(kind: str, user: str, count: int) -> list[bytes]:
    if kind == "4k":
        return [synthetic_message(f"{user}-{n}", 4096) for n in range(count)]
    if kind == "cpython":
        corpus = cpython_messages()
        if not corpus:
            raise SystemExit(f"no corpus messages in {CORPUS_DIR}")
        return [corpus[n % len(corpus)] for n in range(count)]
    raise ValueError(f"unknown corpus {kind!r}")
