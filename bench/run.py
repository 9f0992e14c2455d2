"""The side-by-side run: set up both servers, run every scenario against each in turn, and
write the table.

    python -m bench run --quick     # a few minutes: short runs, 1,000 IDLE connections
    python -m bench run             # the README table: longer runs, 10,000 IDLE connections

Two comparisons, from the same runs of ours:
- "engine" (the headline): Dovecot tuned with {PLAIN} passwords in its passwd-file and its auth
  cache, against ours with the cache of verified passwords warm. Neither side pays for a
  password hash at login, so the figures compare the protocol engines.
- "same argon2id hashes": Dovecot tuned verifying the argon2id hashes we store. Dovecot runs
  argon2id at every login (its cache keeps the hash, not the verification) while we do not,
  so this measures our password cache as much as anything.

Order: each scenario runs against ours, Dovecot plain and Dovecot argon2id in turn, round after
round, the order rotated each round so no side always runs first (the machine may be busy with
other work: alternation spreads that over all sides), then once against Dovecot's default
configuration for reference. The figure reported is the median over rounds.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.dovecot import (
    DovecotInstance,
    ensure_installed,
    raise_fd_limit,
    raise_inotify_instances,
    restore_inotify_instances,
)
from bench.ours import REPO, OurInstance

USERS = 20
MESSAGES = 200
PASSWORD_SCHEME = "argon2id (t=2, m=19456 KiB, p=1; server.directory.ARGON2_PARAMS)"


@dataclass(frozen=True)
class Plan:
    duration: float
    rounds: int
    fetch_connections: int = 20
    pop3_connections: int = 10
    connect_connections: int = 20
    append_connections: int = 10
    idle_connections: int = 10_000
    idle_default: int = 500  # Dovecot's default process_limit is 1,000 imap processes
    sources: int = 8
    backend_workers: int = 1  # our BackEndWorkerProcesses (IMAP and POP3)


FULL = Plan(duration=15, rounds=2)
QUICK = Plan(duration=4, rounds=1, idle_connections=1000, idle_default=200)


@dataclass(frozen=True)
class Scenario:
    name: str  # row label
    load: str  # bench.load scenario
    protocol: str  # "imap" or "pop3"
    users: str  # "u" (4 KB corpus) or "r" (CPython corpus)
    # Whether the password scheme can change the figures: IDLE sessions log in once, before
    # the measurement, so Dovecot argon2id is not run for it (the engine row stands).
    login_bound: bool = True


SCENARIOS = [
    Scenario("fetch 4k", "fetch", "imap", "u"),
    Scenario("fetch cpython", "fetch", "imap", "r"),
    Scenario("pop3 4k", "pop3", "pop3", "u"),
    Scenario("pop3 cpython", "pop3", "pop3", "r"),
    Scenario("connect", "connect", "imap", "u"),
    Scenario("append", "append", "imap", "u"),
    Scenario("idle", "idle", "imap", "u", login_bound=False),
]

# The engine comparison's goals (issue 17): ours/Dovecot plain for these figures.
GOALS: dict[tuple[str, str], tuple[str, float]] = {
    ("fetch", "sessions/s"): (">=", 1.0),
    ("pop3", "sessions/s"): (">=", 1.0),
    ("connect", "logins/s"): (">=", 1.0),
    ("append", "appends/s"): (">=", 1.0),
    ("fetch", "body FETCH p50/p99 ms"): ("p50 <=", 1.5),
}


@dataclass
class Target:
    label: str
    imap_port: int
    pop3_port: int
    roots: list[int]  # process trees counted for CPU and memory
    restart: Callable[[], list[int]] | None = None  # fresh processes; returns the new roots
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- setup
def free_ports(count: int, low: int = 31000, high: int = 32700) -> list[int]:
    """Ports below the ephemeral range (32768+ here), so no client socket takes one first,
    and above the range free_base() gives our services."""
    found = [port for port in range(low, high) if can_bind(port)][:count]
    if len(found) < count:
        raise RuntimeError("no free ports for Dovecot")
    return found


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base(low: int = 12000, high: int = 30000) -> int:
    """A base where every port of our plan (base+80 .. base+1995) is free."""
    from server.settings.models import PortPlan

    for base in range(low, high, 2000):
        plan = PortPlan.shifted(base)
        ports = [
            v for v in plan.model_dump().values() if isinstance(v, int) and not isinstance(v, bool)
        ]
        if all(can_bind(p) for p in ports):
            return base
    raise RuntimeError("no free port range below the ephemeral ports")


def users(prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}{n:02d}", f"bench-{prefix}{n:02d}-secret") for n in range(1, USERS + 1)]


def all_users() -> list[tuple[str, str]]:
    return users("u") + users("r")


def hashes(pairs: list[tuple[str, str]]) -> dict[str, str]:
    from argon2 import PasswordHasher

    from server.directory import ARGON2_PARAMS

    hasher = PasswordHasher(**ARGON2_PARAMS)
    return {name: hasher.hash(password) for name, password in pairs}


def fill_all(instance: OurInstance | DovecotInstance) -> None:
    for name, _ in all_users():
        instance.fill(name, "4k" if name.startswith("u") else "cpython", MESSAGES)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- running
def run_load(
    target: Target,
    scenario: Scenario,
    plan: Plan,
    workdir: Path,
    duration: float | None = None,
    connections: int | None = None,
) -> dict[str, Any]:
    users_file = workdir / f"users-{scenario.users}.json"
    users_file.write_text(json.dumps(users(scenario.users)))
    port = target.pop3_port if scenario.protocol == "pop3" else target.imap_port
    conns = (
        connections
        or {
            "fetch": plan.fetch_connections,
            "pop3": plan.pop3_connections,
            "connect": plan.connect_connections,
            "append": plan.append_connections,
            "idle": plan.idle_connections,
        }[scenario.load]
    )
    command = [
        sys.executable,
        "-m",
        "bench.load",
        scenario.load,
        "--port",
        str(port),
        "--users-file",
        str(users_file),
        "--connections",
        str(conns),
        "--duration",
        str(duration or plan.duration),
        "--label",
        target.label,
        "--sources",
        str(plan.sources),
    ]
    for pid in target.roots:
        command += ["--tree", str(pid)]
    busy0 = busy_seconds()
    cpu0, wall0 = procs.cpu_seconds(target.roots), time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=1800,
    )
    wall = time.perf_counter() - wall0
    cpu = procs.cpu_seconds(target.roots) - cpu0
    busy = busy_seconds() - busy0
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["server_cpu_s"] = round(cpu, 3)
    result["server_cpu_pct"] = round(100 * cpu / wall, 1)
    # Whatever else ran on the machine meanwhile (the generator's share is its own figure):
    # a busy neighbour makes a run worthless, and this says so.
    other = busy - cpu - result.get("generator_cpu_s", 0.0)
    result["other_cpu_pct"] = round(max(0.0, 100 * other / wall), 1)
    done_count = result.get("sessions") or result.get("appends") or result.get("held") or 0
    result["server_cpu_ms_per_op"] = round(1000 * cpu / done_count, 3) if done_count else None
    return result


def restart_dovecot(instance: DovecotInstance) -> list[int]:
    instance.stop()
    instance.start()
    return [instance.pid]


def fresh_start(target: Target, plan: Plan, workdir: Path) -> None:
    """Before an IDLE run: fresh server processes (memory freed by earlier runs is not handed
    back to the kernel by every allocator, and Dovecot keeps reusable imap processes), then
    a short connect run so both auth caches are warm, as in the other scenarios."""
    if target.restart is not None:
        target.roots = target.restart()
    run_load(target, SCENARIOS[4], plan, workdir, duration=2)


def busy_seconds() -> float:
    """CPU time all cores spent on anything but idling, since boot."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_all(
    plan: Plan, workdir: Path, only: list[str] | None, with_default: bool
) -> dict[str, Any]:
    ensure_installed()
    limit = raise_fd_limit()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    pairs = all_users()

    log("our side: init, mailboxes, fill")
    ours = OurInstance(workdir / "ours", free_base())
    ours.create(dict(pairs), backend_workers=plan.backend_workers)
    fill_all(ours)
    log("dovecot: config, fill")
    ports = free_ports(6)
    stored = hashes(pairs)
    plain = DovecotInstance(workdir / "dovecot-plain", "tuned", ports[4], ports[5], "plain")
    tuned = DovecotInstance(workdir / "dovecot-tuned", "tuned", ports[0], ports[1])
    default = DovecotInstance(workdir / "dovecot-default", "default", ports[2], ports[3])
    plain.write_config(dict(pairs))
    for instance in (tuned, default):
        instance.write_config(stored)
    for instance in (plain, tuned, default):
        fill_all(instance)

    started: list[Any] = []
    inotify = raise_inotify_instances()
    try:
        targets = [Target("ours", ours.imap_port, ours.pop3_port, ours.start(), ours.restart)]
        started.append(ours)
        plain.start()
        started.append(plain)
        plain.index()
        targets.append(
            Target(
                "dovecot-plain",
                plain.imap_port,
                plain.pop3_port,
                [plain.pid],
                lambda: restart_dovecot(plain),
            )
        )
        tuned.start()
        started.append(tuned)
        tuned.index()
        targets.append(
            Target(
                "dovecot",
                tuned.imap_port,
                tuned.pop3_port,
                [tuned.pid],
                lambda: restart_dovecot(tuned),
            )
        )
        reference: Target | None = None
        if with_default:
            default.start()
            started.append(default)
            default.index()
            reference = Target(
                "dovecot-default",
                default.imap_port,
                default.pop3_port,
                [default.pid],
                lambda: restart_dovecot(default),
            )

        log("warm-up: one short pass of fetch and pop3 on each server")
        for target in [*targets, *([reference] if reference else [])]:
            for scenario in (SCENARIOS[0], SCENARIOS[1], SCENARIOS[2], SCENARIOS[3]):
                run_load(target, scenario, plan, workdir, duration=2)

        for scenario in SCENARIOS:
            if only and scenario.name.split()[0] not in only and scenario.name not in only:
                continue
            for round_ in range(plan.rounds):
                shift = round_ % len(targets)
                order = targets[shift:] + targets[:shift]
                for target in order:
                    if target.label == "dovecot" and not scenario.login_bound:
                        continue
                    log(f"{scenario.name}: {target.label} (round {round_ + 1}/{plan.rounds})")
                    if scenario.load == "idle":
                        fresh_start(target, plan, workdir)
                    result = run_load(target, scenario, plan, workdir)
                    target.results.setdefault(scenario.name, []).append(result)
            if reference:
                connections = plan.idle_default if scenario.load == "idle" else None
                log(f"{scenario.name}: {reference.label}")
                if scenario.load == "idle":
                    fresh_start(reference, plan, workdir)
                reference.results.setdefault(scenario.name, []).append(
                    run_load(reference, scenario, plan, workdir, connections=connections)
                )
            save(plan, limit, workdir, [*targets, *([reference] if reference else [])])
    finally:
        for instance in reversed(started):
            instance.stop()
        restore_inotify_instances(inotify)

    return save(plan, limit, workdir, [*targets, *([reference] if reference else [])])


def save(plan: Plan, limit: int, workdir: Path, targets: list[Target]) -> dict[str, Any]:
    """results.json as it stands: written after every scenario, so an interrupted run
    keeps what it measured."""
    report = {
        "machine": machine(limit),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "plan": plan.__dict__,
        "password_scheme": PASSWORD_SCHEME,
        "results": {t.label: t.results for t in targets},
    }
    (workdir / "results.json").write_text(json.dumps(report, indent=1))
    return report


def machine(fd_limit: int) -> dict[str, Any]:
    import psutil

    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system()),
        "python": platform.python_version(),
        "dovecot": dovecot.strip(),
        "fd_limit": fd_limit,
    }


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Figure:
    label: str
    path: tuple[str, ...]
    higher_is_better: bool
    unit: str = ""


FIGURES: dict[str, list[Figure]] = {
    "fetch": [
        Figure("sessions/s", ("sessions_per_s",), True),
        Figure("messages/s", ("messages_per_s",), True),
        Figure("MB/s", ("mb_per_s",), True),
        Figure("login p50/p99 ms", ("latency", "login"), False),
        Figure("UID FETCH 1:* p50/p99 ms", ("latency", "fetch_headers"), False),
        Figure("body FETCH p50/p99 ms", ("latency", "fetch_body"), False),
        Figure("server CPU ms/session", ("server_cpu_ms_per_op",), False),
    ],
    "pop3": [
        Figure("sessions/s", ("sessions_per_s",), True),
        Figure("MB/s", ("mb_per_s",), True),
        Figure("RETR p50/p99 ms", ("latency", "retr"), False),
        Figure("server CPU ms/session", ("server_cpu_ms_per_op",), False),
    ],
    "connect": [
        Figure("logins/s", ("sessions_per_s",), True),
        Figure("login p50/p99 ms", ("latency", "login"), False),
        Figure("server CPU ms/login", ("server_cpu_ms_per_op",), False),
    ],
    "append": [
        Figure("appends/s", ("appends_per_s",), True),
        Figure("APPEND p50/p99 ms", ("latency", "append"), False),
        Figure("server CPU ms/append", ("server_cpu_ms_per_op",), False),
    ],
    "idle": [
        Figure("connections held", ("held",), True),
        Figure("PSS KB per connection", ("pss_per_connection_kb",), False),
        Figure("server PSS MB total", ("memory_after", "pss"), False, "MB"),
        Figure("new mail p50/p99 ms", ("exists_latency_ms",), False),
        Figure("new mail max ms", ("exists_latency_ms", "max_ms"), False),
    ],
}


def value(result: dict[str, Any], figure: Figure) -> float | tuple[float, float] | None:
    node: Any = result
    for key in figure.path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, dict):  # a latency summary: p50 and p99
        return (node["p50_ms"], node["p99_ms"])
    if node is None:
        return None
    return node / 2**20 if figure.unit == "MB" else float(node)


def median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if isinstance(values[0], tuple):
        return tuple(statistics.median(v[i] for v in values) for i in range(2))
    return statistics.median(values)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return " / ".join(fmt(x) for x in v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def ratio(ours: Any, theirs: Any) -> str:
    if ours is None or theirs is None:
        return "-"
    if isinstance(ours, tuple):
        return " / ".join(ratio(a, b) for a, b in zip(ours, theirs, strict=True))
    return f"{ours / theirs:.2f}" if theirs else "-"


def goal(scenario: Scenario, figure: Figure, ours: Any, theirs: Any) -> tuple[str, str]:
    """The issue-17 goal for this row of the engine table, and whether it is met."""
    wanted = GOALS.get((scenario.load, figure.label))
    if wanted is None:
        return "", ""
    op, bound = wanted
    text = f"{op} {bound:g}"
    if ours is None or theirs is None:
        return text, "-"
    a, b = (ours[0], theirs[0]) if isinstance(ours, tuple) else (ours, theirs)
    if not b:
        return text, "-"
    met = a / b >= bound if op == ">=" else a / b <= bound
    return text, "yes" if met else "no"


def comparison(
    results: dict[str, Any], theirs_label: str, title: str, with_goals: bool
) -> list[str]:
    ours, theirs = results.get("ours", {}), results.get(theirs_label, {})
    reference = results.get("dovecot-default", {})
    head = "| scenario | figure | ours | Dovecot | ours/Dovecot | better |"
    rule = "|---|---|---:|---:|---:|---|"
    if with_goals:
        head, rule = head + " goal | met |", rule + "---|---|"
    if reference:
        head, rule = head + " Dovecot (default) |", rule + "---:|"
    rows = [f"**{title}**", "", head, rule]
    for scenario in SCENARIOS:
        if scenario.name not in ours and scenario.name not in theirs:
            continue
        name = scenario.name
        if scenario.load == "idle":
            asked = (ours.get(name) or theirs.get(name) or [{}])[0].get("connections")
            name = f"idle ({asked:,} conns)" if asked else name
        for figure in FIGURES[scenario.load]:
            a = median([value(r, figure) for r in ours.get(scenario.name, [])])
            b = median([value(r, figure) for r in theirs.get(scenario.name, [])])
            better = "higher" if figure.higher_is_better else "lower"
            row = f"| {name} | {figure.label} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {better} |"
            if with_goals:
                wanted, met = goal(scenario, figure, a, b)
                row += f" {wanted} | {met} |"
            if reference:
                c = median([value(r, figure) for r in reference.get(scenario.name, [])])
                row += f" {fmt(c)} |"
            rows.append(row)
    return rows


def table(report: dict[str, Any]) -> str:
    results = report["results"]
    sections: list[str] = []
    if "dovecot-plain" in results:
        sections += comparison(
            results,
            "dovecot-plain",
            "Engine: equal password cost (Dovecot tuned, {PLAIN} passwd-file + auth cache; "
            "ours, cache of verified passwords warm)",
            with_goals=True,
        )
        sections.append("")
    sections += comparison(
        results,
        "dovecot",
        "Same argon2id hashes (Dovecot tuned runs argon2id at every login; we cache a "
        "verified password): measures our password cache as much as the engine",
        with_goals=False,
    )
    load_rows = []
    for label, title in (
        ("ours", "ours"),
        ("dovecot-plain", "Dovecot plain"),
        ("dovecot", "Dovecot argon2id"),
    ):
        per = results.get(label, {})
        for scenario in SCENARIOS:
            runs = per.get(scenario.name, [])
            if runs:
                srv = median([r.get("server_cpu_pct") for r in runs])
                gen = median([r.get("generator_cpu_pct") for r in runs])
                other = median([r.get("other_cpu_pct") for r in runs])
                errs = sum(r.get("errors", 0) for r in runs)
                load_rows.append(
                    f"| {scenario.name} | {title} | {fmt(srv)} | {fmt(gen)} | "
                    f"{fmt(other)} | {errs} |"
                )
    m = report["machine"]
    return "\n".join(
        [
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, "
            f"kernel {m['kernel']}, Python {m['python']}, Dovecot {m['dovecot']}, "
            f"open files limit {m['fd_limit']}.  ",
            f"Date: {report['date']}. Rounds per scenario: {report['plan']['rounds']}, "
            f"{report['plan']['duration']:g} s each (median shown). "
            f"Password scheme on both: {report['password_scheme']}.",
            "",
            *sections,
            "",
            "CPU during the runs (100% = one core; the load generator shares the two cores; "
            '"other processes" high means the run was disturbed):',
            "",
            "| scenario | server | server CPU % | generator CPU % | other processes CPU % | errors |",
            "|---|---|---:|---:|---:|---:|",
            *load_rows,
        ]
    )


def write_results(report: dict[str, Any], path: Path) -> None:
    """The table at `path` and the raw figures it was made from beside it (results.json),
    so a committed table can always be checked against its figures."""
    path.write_text(
        "# Benchmark results: mailctl and Dovecot side by side\n\n"
        "Written by `python -m bench run` (see bench/README.md for what each "
        "scenario does and how both servers are configured).\n\n" + table(report) + "\n"
    )
    path.with_name("results.json").write_text(json.dumps(report, indent=1))
