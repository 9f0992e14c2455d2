"""`python -m server run NAME --server S --home H`: one service process (see runtime/main.py).

mailctl starts it detached with --ready-fd; systemd runs it in the foreground (no --ready-fd).
"""

from __future__ import annotations

import argparse
import sys

from server.settings.paths import Home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one service until SIGTERM")
    run.add_argument("name", help="service name, e.g. MSExchangeIMAP4BE")
    run.add_argument("--server", required=True, help="the server of the organization")
    run.add_argument("--home", default=None, help="home folder (default: MAILCTL_HOME)")
    run.add_argument(
        "--ready-fd",
        type=int,
        default=None,
        help="pipe to write READY (or FAILED <reason>) on once listening",
    )
    run.add_argument(
        "--foreground",
        action="store_true",
        help="run attached to the terminal / service manager (the default too)",
    )
    run.add_argument(
        "--class",
        dest="service_class",
        default=None,
        help="module:Class to run instead of the registered one (tests)",
    )
    run.add_argument(
        "--worker",
        type=int,
        default=0,
        help="worker index of a service running several processes (set by the service)",
    )
    run.add_argument(
        "--alive-fd",
        type=int,
        default=None,
        help="a worker's lifeline: the worker stops when this pipe ends",
    )
    args = parser.parse_args(argv)

    from server.runtime.main import run as run_service

    return run_service(
        args.name,
        args.server,
        Home.resolve(args.home),
        args.ready_fd,
        args.service_class,
        worker=args.worker,
        alive_fd=args.alive_fd,
    )


if __name__ == "__main__":
    sys.exit(main())
