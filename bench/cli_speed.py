"""How long mailctl commands take, start to exit: median wall-clock and CPU time of N runs.

Usage: python bench/cli_speed.py [runs] [--bytecode]. Makes a throw-away home (one mailbox), runs each
command once to warm the caches (as the first call of a script's loop does), then times N
runs of every read command (every get- command of the command index with --output json, and
--help; target < 250 ms), a table, and the set-
commands (target < 300 ms; each run writes a new value, so every run really writes).
Runs the console script next to this Python (not a shim such as pyenv's, which adds its own
start-up). CPU time is printed too: on a busy machine wall time says more about the others.
With PYTHONDONTWRITEBYTECODE set (as in some sandboxes) every run compiles mailctl's sources
again; --bytecode lets the runs keep bytecode in a throw-away PYTHONPYCACHEPREFIX, as an
installed package has it. Exit status 1 when a median misses its target.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GET_TARGET_MS = 250.0
SET_TARGET_MS = 300.0

Argv = Callable[[int], list[str]]


def mailctl() -> list[str]:
    script = Path(sys.executable).with_name("mailctl")
    if script.is_file():
        return [str(script)]
    found = shutil.which("mailctl")
    return [found] if found else [sys.executable, "-m", "mailctl"]


def fixed(*args: str) -> Argv:
    return lambda _i: list(args)


def numbered(*args: str) -> Argv:
    """`{}` in an argument becomes the run's number: each run changes the setting."""
    return lambda i: [a.replace("{}", str(i + 1)) for a in args]


def read_commands() -> list[tuple[str, ...]]:
    """Every get- command in the command index (the Windows-only ones that only refuse are
    left out), a few with an identity, and --help: each read command is measured."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from mailctl.command_index import COMMANDS

    lines: list[tuple[str, ...]] = [
        (name,)
        for name, module in sorted(COMMANDS.items())
        if name.startswith("get-") and module != "unsupported"
    ]
    return lines + [
        ("get-mailbox", "demo"),
        ("get-casmailbox", "demo"),
        ("get-service", "MSExchangeIMAP4*"),
    ]


GETS: list[tuple[str, Argv]] = [
    (" ".join([name, *rest]), fixed(name, *rest, "--output", "json"))
    for name, *rest in read_commands()
] + [("--help", fixed("--help"))]
SETS: list[tuple[str, Argv]] = [
    ("set-popsettings --banner", numbered("set-popsettings", "--banner", "hi {}")),
    (
        "Set-ImapSettings -MaxCommandSize",
        lambda i: ["Set-ImapSettings", "-MaxCommandSize", str(2048 + i)],
    ),
    (
        "set-receiveconnector --max-message-size",
        numbered("set-receiveconnector", "Client Frontend MBX01", "--max-message-size", "{}MB"),
    ),
    ("set-casmailbox --pop-enabled", numbered("set-casmailbox", "demo", "--pop-enabled", "{}")),
    (
        "set-service --startup-type",
        numbered("set-service", "MSExchangePOP3", "--startup-type", "{}"),
    ),
]
OTHERS: list[tuple[str, Argv]] = [
    ("get-popsettings (table)", fixed("get-popsettings")),
    ("get-mailbox (table)", fixed("get-mailbox")),
]
# set-casmailbox alternates $true/$false, set-service Manual/Disabled, by the run's number.
ALTERNATE = {"--pop-enabled": ["true", "false"], "--startup-type": ["Manual", "Disabled"]}


def argv_of(make: Argv, i: int) -> list[str]:
    args = make(i)
    for j, word in enumerate(args[:-1]):
        if word in ALTERNATE:
            args[j + 1] = ALTERNATE[word][i % 2]
    return [*mailctl(), *args]


def measure(make: Argv, env: dict[str, str], runs: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of `runs` runs, after one unmeasured warm-up run."""
    subprocess.run(argv_of(make, runs + 1), env=env, stdout=subprocess.DEVNULL, check=True)
    walls, cpus = [], []
    for i in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv_of(make, i), env=env, stdout=subprocess.DEVNULL, check=True)
        walls.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    bytecode = "--bytecode" in sys.argv[1:]
    runs = int(args[0]) if args else 15
    missed = []
    compiled = "kept" if bytecode or not os.environ.get("PYTHONDONTWRITEBYTECODE") else "not kept"
    print(
        f"{'command':<44} {'wall':>7} {'cpu':>7}  target   (median of {runs} runs, bytecode {compiled})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MAILCTL_HOME": str(Path(tmp) / "home")}
        if bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run(
            [*mailctl(), "init", "--base-port", "40000", "--demo-password", "bench"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for group, target in ((GETS, GET_TARGET_MS), (SETS, SET_TARGET_MS), (OTHERS, None)):
            for label, make in group:
                wall, cpu = measure(make, env, runs)
                verdict = ""
                if target is not None:
                    verdict = f"< {target:.0f}" + ("" if wall < target else "  MISSED")
                    if wall >= target:
                        missed.append(label)
                print(f"{label:<44} {wall:5.0f}ms {cpu:5.0f}ms  {verdict}")
    if missed:
        print("missed: " + ", ".join(missed))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
