"""Output of read commands: a rich table, Format-List style, or stable JSON.

JSON is the contract for scripts: an object for commands about one thing (get-popsettings),
an array for commands that list things (get-mailbox, get-service); keys are the Exchange
property names in the order of settings.toml; values are what settings.toml stores
(strings, numbers, booleans, lists, null). Table and list output are for people.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from typing import Any

from mailctl.errors import fail

# Set by the Exchange-spelling pipeline: `| Format-List props` -> ("list", ["props"]).
FORCED: tuple[str, list[str]] | None = None
# When not None, identities of emitted objects are collected here (Get-X | Set-X).
CAPTURE: list[str] | None = None

FORMATS = ("table", "list", "json")


def display(value: Any) -> str:
    """PowerShell-like rendering: True/False, {a, b} for lists, empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return "{" + ", ".join(display(v) for v in value) + "}"
    return str(value)


def select(row: dict[str, Any], patterns: list[str]) -> dict[str, Any]:
    if not patterns:
        return row
    lowered = [p.lower() for p in patterns]
    return {k: v for k, v in row.items() if any(fnmatch.fnmatchcase(k.lower(), p) for p in lowered)}


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def emit(
    data: dict[str, Any] | list[dict[str, Any]],
    output: str,
    *,
    columns: list[str] | None = None,
    notes: dict[str, str] | None = None,
    title: str | None = None,
) -> None:
    properties: list[str] = []
    if FORCED:
        output, properties = FORCED
    output = (output or "table").lower()
    if output not in FORMATS:
        fail(f"--output {output!r} is not valid", allowed=", ".join(FORMATS))
    rows = data if isinstance(data, list) else [data]
    if CAPTURE is not None:
        CAPTURE.extend(str(r.get("Identity") or r.get("Name") or "") for r in rows)
    if properties:
        rows = [select(r, properties) for r in rows]
        data = rows if isinstance(data, list) else rows[0]
    notes = notes or {}
    if output == "json":
        sys.stdout.write(to_json(data) + "\n")
    elif output == "list":
        _format_list(rows, notes)
    elif isinstance(data, dict) and not properties:
        _property_table(rows[0], notes, title)
    else:
        _table(rows, columns if not properties else None, title)


def _noted(key: str, value: Any, notes: dict[str, str]) -> str:
    text = display(value)
    return f"{text}  ({notes[key]})" if key in notes else text


def _format_list(rows: list[dict[str, Any]], notes: dict[str, str]) -> None:
    out = []
    for row in rows:
        width = max((len(k) for k in row), default=0)
        out.append("\n".join(f"{k:<{width}} : {_noted(k, v, notes)}" for k, v in row.items()))
    sys.stdout.write("\n\n".join(out) + "\n" if out else "")


def _console() -> Any:
    import os

    from rich.console import Console

    # Piped output is read by people with wide terminals or by grep: do not wrap at 80.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "0") or 0) or 200
    return Console(file=sys.stdout, soft_wrap=False, width=width)


def _property_table(row: dict[str, Any], notes: dict[str, str], title: str | None) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("Property", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for key, value in row.items():
        table.add_row(key, _noted(key, value, notes))
    _console().print(table)


def _table(rows: list[dict[str, Any]], columns: list[str] | None, title: str | None) -> None:
    from rich.table import Table

    if not rows:
        sys.stdout.write("(none)\n")
        return
    columns = columns or list(rows[0])
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(display(row.get(c)) for c in columns))
    _console().print(table)
