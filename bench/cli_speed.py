"""How long `mailctl get-popsettings --output json` takes, start to exit (median of N runs).

Usage: python bench/cli_speed.py [runs]. Makes a throw-away home, runs the command once to
warm the settings cache (as the first call of a script's loop does), then times N runs.
Also times the full path (table output, and a set- command) for comparison.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 250.0


def mailctl() -> list[str]:
    script = shutil.which("mailctl")
    return [script] if script else [sys.executable, "-m", "mailctl"]


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MAILCTL_HOME": str(Path(tmp) / "home")}
        subprocess.run(
            [*mailctl(), "init", "--base-port", "40000", "--no-demo"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        fast = [*mailctl(), "get-popsettings", "--output", "json"]
        subprocess.run(fast, env=env, check=True, stdout=subprocess.DEVNULL)  # warm the cache
        fast_ms = median_ms(fast, env, runs)
        table_ms = median_ms([*mailctl(), "get-popsettings"], env, max(5, runs // 3))
        set_ms = median_ms(
            [*mailctl(), "set-popsettings", "--banner", "hi"], env, max(5, runs // 3)
        )
    print(
        f"mailctl get-popsettings --output json: median {fast_ms:.0f} ms over {runs} runs (target < {TARGET_MS:.0f} ms)"
    )
    print(f"mailctl get-popsettings (table, full CLI): median {table_ms:.0f} ms")
    print(f"mailctl set-popsettings --banner hi: median {set_ms:.0f} ms")
    sys.exit(0 if fast_ms < TARGET_MS else 1)


if __name__ == "__main__":
    main()
