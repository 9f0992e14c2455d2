"""Which command modules a run imports: only those of the commands on its line when
mailctl/command_index.py knows them, every module of mailctl/commands/ otherwise (help,
completion, an unknown name, a stale index), and the click group built from what is registered.

The command modules import the registry (through mailctl.cli); nothing here imports them by
a static import statement. They are found by name at run time, as a plugin host finds its
plugins, so the import graph has no circle between the shell and its commands (the
acyclic contract in pyproject.toml).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import typer

from mailctl.registry import (
    COMMANDS,
    PROTOCOL_DISABLED,
    PROTOCOL_ENABLED,
    SERVICE_STATUS,
    UNSUPPORTED,
    app,
)

COMMANDS_PACKAGE = f"{__package__}.commands"


def commands_package() -> ModuleType:
    """mailctl.commands (module_names, import_all), imported by name: see the docstring."""
    return importlib.import_module(COMMANDS_PACKAGE)


def load_commands() -> None:
    """Import every module in mailctl/commands/ (help, completion, the generators)."""
    commands_package().import_all()


def load_modules_for(names: Iterable[str]) -> bool:
    """Import only the modules that register `names` (command names, any case), as
    mailctl/command_index.py says. False when a name is not in the index or its module did not
    register it (a new or moved command): the caller then loads every module."""
    try:
        from mailctl.command_index import COMMANDS as INDEX
    except ImportError:  # pragma: no cover - the generated file is missing
        return False
    wanted = [n.lower().removesuffix(".ps1") for n in names]
    if not wanted or any(n not in INDEX for n in wanted):
        return False
    for module in sorted({INDEX[n] for n in wanted}):
        try:
            importlib.import_module(f"{COMMANDS_PACKAGE}.{module}")
        except Exception:  # noqa: BLE001 - load_commands reports it with the other modules
            return False
    return all(n in COMMANDS or n in UNSUPPORTED for n in wanted)


def load_hook_modules() -> None:
    """Import the modules that add to PROTOCOL_ENABLED / PROTOCOL_DISABLED / SERVICE_STATUS
    (a run that imported only its own command's module has not seen them yet)."""
    try:
        from mailctl.command_index import HOOKS
    except ImportError:  # pragma: no cover - the generated file is missing
        load_commands()
        return
    for module in HOOKS:
        importlib.import_module(f"{COMMANDS_PACKAGE}.{module}")


def hook_modules() -> list[str]:
    """Modules of mailctl/commands/ whose functions sit in the hook lists (for the index)."""
    prefix = f"{COMMANDS_PACKAGE}."
    found = {
        getattr(f, "__module__", "")
        for f in [*PROTOCOL_ENABLED, *PROTOCOL_DISABLED, *SERVICE_STATUS]
    }
    return sorted(m.removeprefix(prefix) for m in found if m.startswith(prefix))


_group: Any = None
_group_size = -1


def _canonical_order() -> bool:
    """Put the commands in the order `mailctl --help` lists them: by module (mailctl/commands/
    in name order), then as the module registers them. Otherwise the order would depend on
    which modules an earlier command line of this process imported (tests run many), and
    would not be the help text mailctl/command_index.py keeps. True when it changed."""
    names = commands_package().module_names()
    rank = {f"{COMMANDS_PACKAGE}.{m}": i for i, m in enumerate(names)}

    def key(cmd: Any) -> int:
        info = COMMANDS.get(cmd.name or "")
        return rank.get(info.module if info else "", len(rank))

    ordered = sorted(app.registered_commands, key=key)
    if ordered == app.registered_commands:
        return False
    app.registered_commands[:] = ordered
    return True


def click_group(names: Iterable[str] | None = None) -> Any:
    """The click group of the registered commands: of every command, or (`names`) at least of
    those, importing only their modules when the index knows them. Rebuilt when a later call
    registered more commands (tests run many command lines in one process)."""
    global _group, _group_size
    if names is None or not load_modules_for(names):
        load_commands()
        if _canonical_order():
            _group = None
    if _group is None or _group_size != len(app.registered_commands):
        _group = typer.main.get_command(app)
        _group_size = len(app.registered_commands)
    return _group
