"""Where our services spend a scenario's time: py-spy on each service process while the load
generator runs, summarised as file:function with % of samples (self and inclusive).

    python -m bench.profile --home /var/tmp/mailctl-bench/ours/home --scenario fetch \\
        --port 12143 --users-file /var/tmp/mailctl-bench/users-u.json

Needs py-spy (pip install py-spy) and the right to ptrace the services (root, or the same user
with ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.ours import REPO, SERVER

SERVICES = {
    "imap": ("MSExchangeIMAP4", "MSExchangeIMAP4BE"),
    "pop3": ("MSExchangePOP3", "MSExchangePOP3BE"),
}


def summarize(raw: Path, top: int = 15) -> str:
    """py-spy's raw (collapsed) output -> the frames with the most samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "  (no samples)"
    lines = ["  self:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive (ours and asyncio; the interpreter's entry frames left out):")
    boring = (
        "<module>",
        "run (asyncio",
        "_run_code",
        "_run_module_as_main",
        "main (server",
        "run_forever",
        "run_until_complete",
        "Runner.run",
        "run (server/runtime",
    )
    picked = [(f, n) for f, n in inclusive.most_common() if not f.startswith(boring)][:top]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in picked]
    return f"  samples: {total}\n" + "\n".join(lines)


# Where a frame's time goes, first match wins (the innermost frame of ours or the library
# that does the work decides: a sample in ssl.py under the relay counts as TLS).
CATEGORIES = [
    ("argon2 (password hash)", ("argon2/",)),
    ("TLS (handshake, encrypt, decrypt)", ("ssl.py", "sslproto")),
    ("SQLite and the store", ("server/store/", "sqlite3")),
    ("hand-over", ("server/protocols/handover.py", "server/protocols/proxyv2.py")),
    ("relay", ("server/frontend/relay.py",)),
    (
        "login (front end: core, directory, throttle, limits)",
        ("server/frontend/", "server/directory/"),
    ),
    ("IMAP/POP3 protocol code", ("server/protocols/", "server/backend/")),
    (
        "retrieval, settings, logs",
        ("server/retrieval/", "server/settings/", "server/runtime/", "logging/"),
    ),
    (
        "event loop, sockets, threads",
        ("asyncio/", "selectors.py", "socket.py", "threading.py", "concurrent/", "uvloop"),
    ),
]


IDLE = (
    "select (",
    "EpollSelector.select",
    "poll (",
    "_worker (concurrent/futures/thread.py:81)",
    "Condition.wait",
    "wait (threading.py",
    "_recv_loop",
    "recv (",
)


def per_session(raw: Path, sessions: int, rate: int) -> str:
    """Samples -> milliseconds of one process per session, by category: py-spy samples
    `rate` times a second, so n samples are n/rate seconds of a running thread (on a busy
    machine, of a thread running or waiting for a core). Under uvloop the loop's own wait
    is C code py-spy cannot tell from work: run the services with MAILCTL_EVENT_LOOP=asyncio
    for this breakdown."""
    spent: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")[::-1]
        if frames and frames[0].startswith(IDLE):
            continue  # waiting for work, not doing it
        label = "other"
        for frame in frames:
            found = next(
                (name for name, marks in CATEGORIES if any(m in frame for m in marks)), None
            )
            if found:
                label = found
                break
        spent[label] += int(count_text)
    if not sessions:
        return "  (no sessions)"
    total = sum(spent.values())
    lines = [f"  {1000 * total / rate / sessions:6.2f} ms per session in all"]
    lines += [
        f"  {1000 * n / rate / sessions:6.2f} ms  {label}" for label, n in spent.most_common()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--scenario", default="fetch")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--users-file", type=Path, required=True)
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("/tmp"))
    a = p.parse_args(argv)

    from server.control.services import find_process
    from server.settings.paths import Home

    home = Home.resolve(a.home)
    protocol = "pop3" if a.scenario == "pop3" else "imap"
    pids = {}
    for name in SERVICES[protocol]:
        process = find_process(home, name, SERVER)
        if process is None:
            raise SystemExit(f"{name} is not running in {a.home}")
        pids[name] = process.pid
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.load",
            a.scenario,
            "--port",
            str(a.port),
            "--users-file",
            str(a.users_file),
            "--connections",
            str(a.connections),
            "--duration",
            str(a.duration + 2),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    spies = {
        name: subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(a.duration)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(a.out / f"profile-{a.scenario}-{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }
    for spy in spies.values():
        spy.wait()
    out, _ = load.communicate()
    print(out.strip()[:400])
    import json

    result = json.loads(out.strip().splitlines()[-1])
    # The load ran a little longer than the profile: scale the sessions to the profile.
    sessions = int(result.get("sessions", 0) * a.duration / max(result.get("duration_s", 1), 1))
    for name in pids:
        print(f"\n{name} during {a.scenario}:")
        print(summarize(a.out / f"profile-{a.scenario}-{name}.txt"))
        print(f"{name}, CPU per session (waiting in the selector left out):")
        print(per_session(a.out / f"profile-{a.scenario}-{name}.txt", sessions, 200))


if __name__ == "__main__":
    main()
