"""Shared helpers for the mailctl CLI tests: run a command line in-process (both spellings
go through the same entry as the console script, minus the process start)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from typing import Any

from mailctl.cli import run
from server.settings.paths import Home


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def mailctl(home: Home, *args: str, stdin: str = "") -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(["--home", str(home.root), *args])
    finally:
        sys.stdin = saved
    return Result(code, out.getvalue(), err.getvalue())


def ok(home: Home, *args: str, stdin: str = "") -> Result:
    result = mailctl(home, *args, stdin=stdin)
    assert result.code == 0, (args, result.err)
    return result
