"""Every module in this package is imported on start; each registers its commands with
`mailctl.cli.command` (see the docstring of mailctl/cli.py)."""

from __future__ import annotations

import importlib
import pkgutil


def _import_all() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()
