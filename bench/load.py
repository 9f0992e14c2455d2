"""The load generator: asyncio IMAP and POP3 clients driving one scenario, one JSON line out.

    python -m bench.load fetch --port 10143 --users-file users.json --connections 20 --duration 10

Scenarios (each bounded by --duration seconds and --max-sessions):
  fetch    C connections looping: login, SELECT INBOX, UID FETCH 1:* (FLAGS RFC822.SIZE and the
           From/Subject/Date header fields), 10 random full bodies, LOGOUT.
  idle     N connections in IDLE on INBOX, then one delivery (APPEND over a separate
           connection) per mailbox in turn; server memory before/after, time to EXISTS.
  pop3     login (USER/PASS), STAT, UIDL, RETR every message, QUIT; one mailbox per connection
           (POP3 locks the maildrop).
  connect  connect, login, LOGOUT: the login rate.
  append   logged-in connections looping APPEND of a 4 KB message into the folder Bench.

Traffic goes only to loopback: the target must be 127.0.0.0/8 and sources are 127.0.0.x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus import synthetic_message

READ_LIMIT = 1 << 24  # largest line or message body the client buffers
SESSION_TIMEOUT = 60.0
EXISTS = re.compile(rb"^\* (\d+) EXISTS\r\n$")
UID = re.compile(rb"[( ]UID (\d+)")


class ProtocolFailure(Exception):
    """The server answered NO/BAD/-ERR or something the client cannot read."""


# ------------------------------------------------------------------------------- measuring
@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])

    async def timed(self, name: str, step: Awaitable[object]) -> object:
        start = time.perf_counter()
        result = await step
        self.latencies[name].append(time.perf_counter() - start)
        return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def latency_summary(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "n": len(v),
            "p50_ms": round(percentile(v, 0.50) * 1000, 3),
            "p99_ms": round(percentile(v, 0.99) * 1000, 3),
            "max_ms": round(max(v) * 1000, 3),
        }
        for name, v in values.items()
        if v
    }


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------- clients
def check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to load {host}: the generator only talks to loopback")


def source_address(index: int, sources: int) -> str:
    """127.0.0.1, .2, ...: more (source, port) pairs than one address's ephemeral range."""
    return f"127.0.0.{1 + index % max(1, sources)}"


async def open_stream(
    host: str, port: int, source: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None, limit=READ_LIMIT
    )


def quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


@dataclass
class Reply:
    untagged: list[bytes]  # first lines of untagged responses (when kept)
    fetches: int = 0
    literal_bytes: int = 0


class ImapClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.tag = 0
        self.received = 0

    @classmethod
    async def connect(cls, host: str, port: int, source: str | None = None) -> ImapClient:
        client = cls(*await open_stream(host, port, source))
        greeting = await client.line()
        if not greeting.startswith(b"* OK"):
            client.close()
            raise ProtocolFailure(f"greeting {greeting[:100]!r}")
        return client

    async def line(self) -> bytes:
        line = await self.r.readuntil(b"\r\n")
        self.received += len(line)
        return line

    def send(self, command: bytes) -> bytes:
        self.tag += 1
        tag = b"a%d" % self.tag
        self.w.write(tag + b" " + command + b"\r\n")
        return tag

    async def command(self, command: bytes, keep: bool = False) -> Reply:
        return await self.response(self.send(command), keep)

    async def response(self, tag: bytes, keep: bool = False) -> Reply:
        reply = Reply([])
        done = tag + b" "
        while True:
            line = await self.line()
            first = line
            while line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1 : -3])
                await self.r.readexactly(size)
                self.received += size
                reply.literal_bytes += size
                line = await self.line()
            if first.startswith(done):
                status = first[len(done) :].split(b" ", 1)[0].upper()
                if status != b"OK":
                    raise ProtocolFailure(first[:200].decode(errors="replace").strip())
                return reply
            if first.startswith(b"* "):
                if b" FETCH (" in first[:40]:
                    reply.fetches += 1
                if keep:
                    reply.untagged.append(first)

    async def login(self, user: str, password: str) -> None:
        await self.command(b"LOGIN " + quoted(user) + b" " + quoted(password))

    async def append(self, folder: str, message: bytes) -> None:
        tag = self.send(b"APPEND " + quoted(folder) + b" {%d}" % len(message))
        line = await self.line()
        if not line.startswith(b"+"):
            raise ProtocolFailure(f"APPEND not continued: {line[:200]!r}")
        self.w.write(message + b"\r\n")
        await self.response(tag)

    async def logout(self) -> None:
        try:
            await self.command(b"LOGOUT")
        finally:
            self.close()

    def close(self) -> None:
        self.w.close()


class Pop3Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.received = 0

    @classmethod
    async def connect(cls, host: str, port: int, source: str | None = None) -> Pop3Client:
        client = cls(*await open_stream(host, port, source))
        await client.status_line()
        return client

    async def status_line(self) -> bytes:
        line = await self.r.readuntil(b"\r\n")
        self.received += len(line)
        if not line.startswith(b"+OK"):
            raise ProtocolFailure(line[:200].decode(errors="replace").strip())
        return line

    async def simple(self, command: bytes) -> bytes:
        self.w.write(command + b"\r\n")
        return await self.status_line()

    async def multi(self, command: bytes) -> int:
        """A multi-line answer; returns its size. Reads up to lines ending in '.': the
        terminator is the chunk that is a lone '.' line (RFC 1939 section 3)."""
        self.w.write(command + b"\r\n")
        size = len(await self.status_line())
        while True:
            chunk = await self.r.readuntil(b".\r\n")
            size += len(chunk)
            if chunk == b".\r\n" or chunk.endswith(b"\r\n.\r\n"):
                self.received += size
                return size

    def close(self) -> None:
        self.w.close()


# ------------------------------------------------------------------------------- scenarios
@dataclass
class Options:
    host: str
    port: int
    users: list[tuple[str, str]]
    connections: int
    duration: float
    max_sessions: int
    sources: int
    label: str
    trees: list[int]
    bodies: int = 10
    ramp: int = 100
    deliver_timeout: float = 10.0
    settle: float = 1.0
    seed: int = 1


Session = Callable[[int, int, Stats], Awaitable[None]]


async def loop_sessions(opts: Options, stats: Stats, session: Session) -> float:
    """Run C workers each opening session after session until time or count runs out;
    returns the elapsed time."""
    start = time.perf_counter()
    deadline = start + opts.duration
    started = 0

    async def worker(index: int) -> None:
        nonlocal started
        while time.perf_counter() < deadline and started < opts.max_sessions:
            started += 1
            try:
                async with asyncio.timeout(SESSION_TIMEOUT):
                    await session(index, started, stats)
                stats.counts["sessions"] += 1
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ProtocolFailure,
                TimeoutError,
                ValueError,
            ) as exc:
                stats.error(exc)
                await asyncio.sleep(0.05)  # a refusing server must not turn this into a spin

    await asyncio.gather(*(worker(i) for i in range(opts.connections)))
    return time.perf_counter() - start


def user_for(opts: Options, index: int, serial: int) -> tuple[str, str]:
    return opts.users[(index + serial) % len(opts.users)]


async def fetch_scenario(opts: Options, stats: Stats) -> dict[str, object]:
    rng = random.Random(opts.seed)

    async def session(index: int, serial: int, st: Stats) -> None:
        user, password = user_for(opts, index, serial)
        client = await st.timed(
            "connect", ImapClient.connect(opts.host, opts.port, source_address(index, opts.sources))
        )
        try:
            await st.timed("login", client.login(user, password))
            await st.timed("select", client.command(b"SELECT INBOX"))
            listing = await st.timed(
                "fetch_headers",
                client.command(
                    b"UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
                    keep=True,
                ),
            )
            assert isinstance(listing, Reply)
            uids = [int(m.group(1)) for line in listing.untagged if (m := UID.search(line))]
            if not uids:
                raise ProtocolFailure("UID FETCH returned no UIDs")
            st.counts["messages"] += listing.fetches
            for uid in rng.sample(uids, min(opts.bodies, len(uids))):
                body = await st.timed(
                    "fetch_body", client.command(b"UID FETCH %d BODY.PEEK[]" % uid)
                )
                assert isinstance(body, Reply)
                st.counts["messages"] += body.fetches
            await st.timed("logout", client.logout())
        finally:
            client.close()
            st.counts["bytes"] += client.received

    elapsed = await loop_sessions(opts, stats, session)
    return rates(stats, elapsed, ("sessions", "messages"))


async def connect_scenario(opts: Options, stats: Stats) -> dict[str, object]:
    async def session(index: int, serial: int, st: Stats) -> None:
        user, password = user_for(opts, index, serial)
        start = time.perf_counter()
        client = await ImapClient.connect(opts.host, opts.port, source_address(index, opts.sources))
        try:
            await st.timed("login", client.login(user, password))
            await st.timed("logout", client.logout())
        finally:
            client.close()
        st.latencies["session"].append(time.perf_counter() - start)

    elapsed = await loop_sessions(opts, stats, session)
    return rates(stats, elapsed, ("sessions",))


async def pop3_scenario(opts: Options, stats: Stats) -> dict[str, object]:
    if opts.connections > len(opts.users):
        raise SystemExit("pop3: at most one connection per mailbox (POP3 locks the maildrop)")

    async def session(index: int, serial: int, st: Stats) -> None:
        user, password = opts.users[index]  # each worker owns one maildrop
        client = await st.timed(
            "connect", Pop3Client.connect(opts.host, opts.port, source_address(index, opts.sources))
        )
        try:
            start = time.perf_counter()
            await client.simple(b"USER " + user.encode())
            await client.simple(b"PASS " + password.encode())
            st.latencies["login"].append(time.perf_counter() - start)
            stat = await st.timed("stat", client.simple(b"STAT"))
            assert isinstance(stat, bytes)
            count = int(stat.split()[1])
            await st.timed("uidl", client.multi(b"UIDL"))
            for number in range(1, count + 1):
                await st.timed("retr", client.multi(b"RETR %d" % number))
            st.counts["messages"] += count
            await st.timed("quit", client.simple(b"QUIT"))
        finally:
            client.close()
            st.counts["bytes"] += client.received

    elapsed = await loop_sessions(opts, stats, session)
    return rates(stats, elapsed, ("sessions", "messages"))


async def append_scenario(opts: Options, stats: Stats) -> dict[str, object]:
    """Each worker logs in once and appends until the time is up (fsync is the server's
    business: both are configured to make a message durable before OK)."""
    deadline = time.perf_counter() + opts.duration
    appended = 0

    async def worker(index: int) -> None:
        nonlocal appended
        user, password = opts.users[index % len(opts.users)]
        client = await ImapClient.connect(opts.host, opts.port, source_address(index, opts.sources))
        try:
            await client.login(user, password)
            with contextlib.suppress(ProtocolFailure):  # exists already from an earlier run
                await client.command(b"CREATE Bench")
            serial = 0
            while time.perf_counter() < deadline and appended < opts.max_sessions:
                appended += 1
                serial += 1
                message = synthetic_message(f"append-{index}-{serial}", 4096, seed=serial)
                await stats.timed("append", client.append("Bench", message))
                stats.counts["appends"] += 1
                stats.counts["bytes"] += len(message)
            await client.logout()
        except (OSError, asyncio.IncompleteReadError, ProtocolFailure) as exc:
            stats.error(exc)
        finally:
            client.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(opts.connections)))
    return rates(stats, time.perf_counter() - start, ("appends",))


def rates(stats: Stats, elapsed: float, counted: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {"duration_s": round(elapsed, 3)}
    for name in counted:
        out[name] = stats.counts[name]
        out[f"{name}_per_s"] = round(stats.counts[name] / elapsed, 2)
    if "bytes" in stats.counts:
        out["mb_per_s"] = round(stats.counts["bytes"] / elapsed / 1e6, 3)
    return out


@dataclass
class IdleSession:
    client: ImapClient
    user: str
    exists: int = 0
    seen_at: float | None = None
    reader: asyncio.Task[None] | None = None


async def idle_scenario(opts: Options, stats: Stats) -> dict[str, object]:
    from bench.procs import memory

    before = memory(opts.trees)
    sessions: list[IdleSession] = []
    by_user: dict[str, list[IdleSession]] = defaultdict(list)
    gate = asyncio.Semaphore(opts.ramp)  # a listen backlog holds ~100-500: do not flood it
    arrived: dict[str, asyncio.Event] = {}
    t0: dict[str, float] = {}

    async def watch(session: IdleSession) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while True:
                line = await session.client.line()
                found = EXISTS.match(line)
                if found and int(found.group(1)) > session.exists and session.seen_at is None:
                    session.seen_at = time.perf_counter()
                    peers = by_user[session.user]
                    if all(p.seen_at is not None for p in peers):
                        arrived[session.user].set()

    give_up = max(50, opts.connections // 10)

    async def open_idle(index: int, user: str, password: str) -> tuple[ImapClient, int]:
        client = await ImapClient.connect(opts.host, opts.port, source_address(index, opts.sources))
        try:
            await client.login(user, password)
            selected = await client.command(b"SELECT INBOX", keep=True)
            exists = next(
                (int(m.group(1)) for ln in selected.untagged if (m := EXISTS.match(ln))), 0
            )
            client.send(b"IDLE")
            line = await client.line()
            if not line.startswith(b"+"):
                raise ProtocolFailure(f"IDLE refused: {line[:200]!r}")
        except BaseException:
            client.close()
            raise
        return client, exists

    async def open_one(index: int) -> None:
        user, password = opts.users[index % len(opts.users)]
        async with gate:
            if stats.errors >= give_up:  # the server refuses: do not wait out every timeout
                raise ProtocolFailure("skipped after too many failures")
            start = time.perf_counter()
            try:
                async with asyncio.timeout(SESSION_TIMEOUT):
                    client, exists = await open_idle(index, user, password)
            except BaseException as exc:
                stats.error(exc)
                raise
            stats.latencies["setup"].append(time.perf_counter() - start)
        session = IdleSession(client, user, exists)
        session.reader = asyncio.create_task(watch(session))
        sessions.append(session)
        by_user[user].append(session)

    setup_start = time.perf_counter()
    results = await asyncio.gather(
        *(open_one(i) for i in range(opts.connections)), return_exceptions=True
    )
    skipped = sum(1 for r in results if isinstance(r, ProtocolFailure) and "skipped" in str(r))
    setup_s = time.perf_counter() - setup_start
    await asyncio.sleep(opts.settle)  # let lazily started server processes finish forking
    after = memory(opts.trees)
    # Each root's own tree too (front end and back end apart: bench/idle_scale.py).
    by_root = {str(pid): memory([pid]).pss for pid in opts.trees}
    held = len(sessions)

    # Deliveries: one message per mailbox, one mailbox at a time, each waited for until every
    # IDLE session of that mailbox saw its EXISTS (or the timeout), so the latencies of one
    # mailbox are not queued behind another's.
    latencies: list[float] = []
    spreads: list[tuple[float, float]] = []  # per mailbox: first and last EXISTS, seconds
    missed = 0
    for user, password in opts.users:
        peers = by_user.get(user)
        if not peers:
            continue
        arrived[user] = asyncio.Event()
        courier = await ImapClient.connect(opts.host, opts.port, "127.0.0.1")
        await courier.login(user, password)
        message = synthetic_message(f"delivery-{user}", 4096, seed=7)
        t0[user] = time.perf_counter()
        await stats.timed("delivery_append", courier.append("INBOX", message))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(opts.deliver_timeout):
                await arrived[user].wait()
        seen = []
        for peer in peers:
            if peer.seen_at is None:
                missed += 1
            else:
                seen.append(peer.seen_at - t0[user])
        latencies += seen
        if seen:
            spreads.append((min(seen), max(seen)))
        await courier.logout()

    for session in sessions:
        if session.reader:
            session.reader.cancel()
        session.client.close()
    await asyncio.sleep(0)
    return {
        "held": held,
        "skipped": skipped,
        "setup_s": round(setup_s, 3),
        "memory_before": before.__dict__,
        "memory_after": after.__dict__,
        "memory_by_root": by_root,
        "pss_per_connection_kb": round((after.pss - before.pss) / max(1, held) / 1024, 2),
        "rss_per_connection_kb": round((after.rss - before.rss) / max(1, held) / 1024, 2),
        "uss_per_connection_kb": round((after.uss - before.uss) / max(1, held) / 1024, 2),
        "server_processes_after": after.processes,
        "exists_latency_ms": {
            "n": len(latencies),
            "missed": missed,
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "max_ms": round(max(latencies, default=float("nan")) * 1000, 3),
            # Per mailbox, in delivery order: the first and the last session to see it.
            "by_mailbox_first_last_ms": [
                [round(a * 1000, 1), round(b * 1000, 1)] for a, b in spreads
            ],
        },
    }


SCENARIOS: dict[str, Callable[[Options, Stats], Awaitable[dict[str, object]]]] = {
    "fetch": fetch_scenario,
    "idle": idle_scenario,
    "pop3": pop3_scenario,
    "connect": connect_scenario,
    "append": append_scenario,
}


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, hard), max(wanted, hard)))
    except (ValueError, OSError):  # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(scenario: str, opts: Options) -> dict[str, object]:
    stats = Stats()
    cpu0, wall0 = own_cpu(), time.perf_counter()
    result = await SCENARIOS[scenario](opts, stats)
    cpu, wall = own_cpu() - cpu0, time.perf_counter() - wall0
    return {
        "scenario": scenario,
        "server": opts.label,
        "connections": opts.connections,
        **result,
        "latency": latency_summary(stats.latencies),
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "generator_cpu_s": round(cpu, 3),
        "generator_cpu_pct": round(100 * cpu / wall, 1) if wall else 0.0,
    }


def parse_args(argv: list[str] | None) -> tuple[str, Options]:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--users-file", type=Path, required=True, help="JSON list of [user, password] pairs"
    )
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-sessions", type=int, default=1_000_000)
    p.add_argument("--sources", type=int, default=1, help="source addresses 127.0.0.1..x")
    p.add_argument("--label", default="")
    p.add_argument(
        "--tree",
        type=int,
        action="append",
        default=[],
        help="root pid of the server's process tree (idle: memory)",
    )
    p.add_argument("--bodies", type=int, default=10)
    p.add_argument("--ramp", type=int, default=100)
    p.add_argument("--deliver-timeout", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    check_loopback(a.host)
    users = [(u, pw) for u, pw in json.loads(a.users_file.read_text())]
    return a.scenario, Options(
        host=a.host,
        port=a.port,
        users=users,
        connections=a.connections,
        duration=a.duration,
        max_sessions=a.max_sessions,
        sources=a.sources,
        label=a.label,
        trees=a.tree,
        bodies=a.bodies,
        ramp=a.ramp,
        deliver_timeout=a.deliver_timeout,
        settle=a.settle,
        seed=a.seed,
    )


def main(argv: list[str] | None = None) -> None:
    scenario, opts = parse_args(argv)
    raise_fd_limit(opts.connections + 1024)
    result = asyncio.run(run(scenario, opts))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # 10,000 half-closed sockets need no orderly teardown


if __name__ == "__main__":
    main()
