"""Command modules; each registers its commands with `mailctl.cli.command` (see the docstring
of mailctl/cli.py). A run imports only the module of its command (mailctl/command_index.py);
`import_all` imports every one, for help, completion and the generated reference."""

from __future__ import annotations

import importlib
import pkgutil
import sys

# module name -> why it could not be imported. One broken module must not take the whole
# CLI down with it; tests assert this stays empty.
FAILED: dict[str, str] = {}


def module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def import_all() -> None:
    for name in module_names():
        if f"{__name__}.{name}" in sys.modules or name in FAILED:
            continue
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as exc:  # noqa: BLE001 - reported, and the rest still loads
            FAILED[name] = f"{type(exc).__name__}: {exc}"
            print(f"mailctl: commands in {name}.py unavailable: {exc}", file=sys.stderr)
