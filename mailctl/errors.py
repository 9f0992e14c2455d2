"""How a command says it cannot do what it was asked: one clear sentence, an exit code, never
a traceback (mailctl.cli.run turns CommandError into the message and the code)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class CommandError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, allowed: str | None = None, code: int = 2) -> NoReturn:
    """Stop the command: one clear sentence on stderr (plus what is allowed); exit `code`
    (2 bad usage or value, 1 the operation failed)."""
    text = message.rstrip(".")
    if allowed:
        text += f"; allowed: {allowed}"
    raise CommandError(text if text.endswith("?") else text + ".", code)


def warn(message: str) -> None:
    print(f"mailctl: {message}", file=sys.stderr)


def validation_message(exc: Exception, spelling: Callable[[str], str] | None = None) -> str:
    """A pydantic ValidationError as `-Param: what was wrong; allowed: ...` lines."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    lines = []
    for item in errors():
        loc = [str(p) for p in item["loc"]]
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown parameter"
        where = spelling(loc[0]) if (spelling and loc) else ".".join(loc)
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)
