"""IDLE at scale through our front ends, ours only: memory per connection split between the
front end and the back end, and the new-mail latency.

    python -m bench.idle_scale [--connections 10000] [--messages 200] [--workdir DIR]
                               [--env NAME=VALUE ...]

Sets up 20 mailboxes (u01..u20, `--messages` 4 KiB messages each, as `bench run`), enables
IMAP4 only (front end MSExchangeIMAP4 and back end MSExchangeIMAP4BE), starts the services
afresh, warms the password cache with a short connect run, then runs the load generator's
idle scenario (bench/load.py) and reads each service process's PSS before and while the
sessions are held. `--env` is passed to the services (through mailctl's environment): the
A/B switch of a lever. Prints one JSON line, with the machine's load average before and
after (on a shared machine the latencies say as much about it as about us).

The clients are plaintext, so the front end hands each socket to the back end after the
login (server/frontend/handoff.py): a session has no hop at all, and the front end keeps
next to nothing of it. The hop (`--plain-hop` or the default TLS one) is only used when the
hand-off is off (`--env MAILCTL_HANDOFF=off`: every session relayed), and then one front-end
process holds two sockets per session: 10,000 need `--fe-workers 2` under a 20,000-descriptor
limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.dovecot import raise_fd_limit
from bench.ours import REPO, OurInstance
from bench.run import USERS, free_base, users

SERVICES = ("MSExchangeIMAP4", "MSExchangeIMAP4BE")


def _pss(pids: dict[str, list[int]]) -> dict[str, int]:
    return {name: procs.memory(roots).pss for name, roots in pids.items()}


def _load(instance: OurInstance, users_file: Path, scenario: str, extra: list[str]) -> Any:
    command = [
        sys.executable,
        "-m",
        "bench.load",
        scenario,
        "--port",
        str(instance.imap_port),
        "--users-file",
        str(users_file),
        "--sources",
        "8",
        *extra,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _service_pids(instance: OurInstance) -> dict[str, list[int]]:
    """Each service's processes: the service process and its children (workers)."""
    return {name: [pid] for name, pid in zip(SERVICES, instance.pids(SERVICES), strict=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_scale", description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/mailctl-idle"))
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for services")
    parser.add_argument("--keep", action="store_true", help="reuse the workdir's mailboxes")
    parser.add_argument(
        "--fe-workers",
        type=int,
        default=1,
        help="front-end WorkerProcesses (relayed sessions only: 2 for 10,000 under 20,000 fds)",
    )
    parser.add_argument("--ramp", type=int, default=50, help="connections opened at once")
    parser.add_argument(
        "--plain-hop",
        action="store_true",
        help="ProxyTargetPort = the plain back-end port (relayed sessions: no TLS hop)",
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    for pair in args.env:
        name, _, value = pair.partition("=")
        os.environ[name] = value
    pairs = users("u")
    users_file = args.workdir / "users.json"
    instance_file = args.workdir / "instance.json"
    if args.keep and instance_file.exists():
        instance = OurInstance(args.workdir / "ours", json.loads(instance_file.read_text()))
    else:
        if args.workdir.exists():
            shutil.rmtree(args.workdir)
        args.workdir.mkdir(parents=True)
        instance = OurInstance(args.workdir / "ours", free_base())
        instance.create(dict(pairs))
        for name, _ in pairs:
            instance.fill(name, "4k", args.messages)
        instance_file.write_text(json.dumps(instance.base_port))
    users_file.write_text(json.dumps(pairs))
    try:
        instance.mailctl("set-imapsettings", "--worker-processes", str(args.fe_workers))
        from server.settings import store
        from server.settings.paths import Home

        server = store.load(Home.resolve(instance.home)).settings.server("MBX01")
        hop = server.ImapBackEndPort if args.plain_hop else server.ImapBackEndSSLPort
        instance.mailctl("set-imapsettings", "--proxy-target-port", str(hop))
        instance.mailctl("enable-imap4")
        for name in ("MSExchangeIMAP4BE", "MSExchangeIMAP4"):
            instance.mailctl("restart-service", name)
        _load(instance, users_file, "connect", ["--connections", "20", "--duration", "2"])
        pids = _service_pids(instance)
        trees = [pid for roots in pids.values() for pid in roots]
        time.sleep(1.0)  # the warm-up's connections are closed: let both sides free them
        before = _pss(pids)
        load_before = os.getloadavg()
        result = _load(
            instance,
            users_file,
            "idle",
            [
                "--connections",
                str(args.connections),
                "--ramp",
                str(args.ramp),
                *[f"--tree={pid}" for pid in trees],
            ],
        )
        after = {name: result["memory_by_root"].get(str(roots[0])) for name, roots in pids.items()}
        held = max(1, result["held"])
        report = {
            "connections": args.connections,
            "held": result["held"],
            "users": USERS,
            "messages": args.messages,
            "env": args.env,
            "fe_workers": args.fe_workers,
            "hop": "plain" if args.plain_hop else "tls",
            "pss_before_mb": {k: round(v / 2**20, 1) for k, v in before.items()},
            "pss_held_mb": {k: round((v or 0) / 2**20, 1) for k, v in after.items()},
            "pss_per_connection_kb": {
                k: round(((after[k] or 0) - before[k]) / held / 1024, 2) for k in before
            },
            "pss_per_connection_kb_total": round(
                sum((after[k] or 0) - before[k] for k in before) / held / 1024, 2
            ),
            "exists_latency_ms": result["exists_latency_ms"],
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "delivery_append_ms": result["latency"].get("delivery_append"),
            "setup_s": result["setup_s"],
            "errors": result["errors"],
            "error_samples": result["error_samples"][:3],
        }
        sys.stdout.write(json.dumps(report) + "\n")
    finally:
        for command in (["disable-imap4"],):
            try:
                instance.mailctl(*command)
            except RuntimeError:
                continue


if __name__ == "__main__":
    main()
