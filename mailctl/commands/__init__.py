"""Every module in this package is imported on start; each registers its commands with
`mailctl.cli.command` (see the docstring of mailctl/cli.py)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

# module name -> why it could not be imported. One broken module must not take the whole
# CLI down with it; tests assert this stays empty.
FAILED: dict[str, str] = {}


def _import_all() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception as exc:  # noqa: BLE001 - reported, and the rest still loads
            FAILED[module.name] = f"{type(exc).__name__}: {exc}"
            print(f"mailctl: commands in {module.name}.py unavailable: {exc}", file=sys.stderr)


_import_all()
