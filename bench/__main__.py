"""python -m bench run [--quick] | python -m bench load SCENARIO ... | python -m bench table FILE"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_WORKDIR = Path("/var/tmp/mailctl-bench")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        from bench.load import main as load_main

        load_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="set up both servers, run every scenario, write the table")
    run.add_argument(
        "--quick", action="store_true", help="short runs and 1,000 IDLE connections: a few minutes"
    )
    run.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="scratch folder (deleted and recreated)",
    )
    run.add_argument("--only", nargs="*", help="scenario names, e.g. fetch idle 'pop3 4k'")
    run.add_argument(
        "--no-default",
        action="store_true",
        help="skip the reference run against Dovecot's default configuration",
    )
    run.add_argument("--idle-connections", type=int)
    run.add_argument("--rounds", type=int)
    run.add_argument("--duration", type=float)
    run.add_argument(
        "--backend-workers",
        type=int,
        help="our back ends' BackEndWorkerProcesses (default 1), for A/B runs",
    )
    run.add_argument(
        "--out",
        type=Path,
        help=f"where to write the table (default: {RESULTS} for a full run, "
        "WORKDIR/RESULTS.md for --quick)",
    )
    table = sub.add_parser("table", help="print the table of a results.json")
    table.add_argument("results", type=Path)
    sub.add_parser("load", help="the load generator (python -m bench load --help)")
    args = parser.parse_args(argv)

    from bench import run as runner

    if args.command == "table":
        print(runner.table(json.loads(args.results.read_text())))
        return
    plan = runner.QUICK if args.quick else runner.FULL
    changes = {
        k: v
        for k, v in (
            ("idle_connections", args.idle_connections),
            ("rounds", args.rounds),
            ("duration", args.duration),
            ("backend_workers", args.backend_workers),
        )
        if v
    }
    if changes:
        from dataclasses import replace

        plan = replace(plan, **changes)
    report = runner.run_all(plan, args.workdir, args.only, not args.no_default)
    out = args.out or (args.workdir / "RESULTS.md" if args.quick else RESULTS)
    runner.write_results(report, out)
    print(runner.table(report))
    print(f"\nwritten to {out}; raw figures in {out.with_name('results.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
