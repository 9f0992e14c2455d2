"""Front-end throughput with 1..N worker processes (WorkerProcesses, SO_REUSEPORT).

    python -m bench.workers [--counts 1 2] [--rounds 2] [--duration 10] [--workdir DIR]

Uses the mailboxes bench/idle_scale.py set up in the same workdir (run it first, or pass
--setup). For each round and each count, alternating (1, 2, 1, 2, ...): WorkerProcesses set,
the front end restarted, then the load generator's connect (LOGIN/LOGOUT) and fetch
scenarios through the front end. Prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.idle_scale import _load
from bench.ours import OurInstance
from bench.run import free_base, users


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/mailctl-idle"))
    parser.add_argument("--setup", action="store_true", help="make the mailboxes first")
    args = parser.parse_args(argv)
    pairs = users("u")
    instance_file = args.workdir / "instance.json"
    users_file = args.workdir / "users.json"
    if args.setup or not instance_file.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        instance = OurInstance(args.workdir / "ours", free_base())
        instance.create(dict(pairs))
        for name, _ in pairs:
            instance.fill(name, "4k", 200)
        instance_file.write_text(json.dumps(instance.base_port))
    else:
        instance = OurInstance(args.workdir / "ours", json.loads(instance_file.read_text()))
    users_file.write_text(json.dumps(pairs))
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        instance.mailctl("enable-imap4")
        instance.mailctl("restart-service", "MSExchangeIMAP4BE")
        for _ in range(args.rounds):
            for count in args.counts:
                instance.mailctl("set-imapsettings", "--worker-processes", str(count))
                instance.mailctl("restart-service", "MSExchangeIMAP4")
                _load(instance, users_file, "connect", ["--connections", "20", "--duration", "2"])
                for scenario in ("connect", "fetch"):
                    run = _load(
                        instance,
                        users_file,
                        scenario,
                        [
                            "--connections",
                            str(args.connections),
                            "--duration",
                            str(args.duration),
                        ],
                    )
                    run["workers"] = count
                    sys.stdout.write(json.dumps(run) + "\n")
                    results.setdefault((scenario, count), []).append(run)
    finally:
        instance.mailctl("set-imapsettings", "--worker-processes", "1")
        instance.mailctl("disable-imap4")
    summary = {
        f"{scenario} x{count}": round(
            statistics.median(float(r.get("sessions_per_s") or 0.0) for r in runs), 1
        )
        for (scenario, count), runs in sorted(results.items())
    }
    sys.stdout.write(json.dumps({"sessions_per_s_median": summary}) + "\n")


if __name__ == "__main__":
    main()
