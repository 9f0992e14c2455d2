"""The mailctl command line: what a command module imports, and run() putting the parts together.

How to add a command
--------------------
Put a module in ``mailctl/commands/`` and decorate a function with :func:`command`, giving
the Exchange cmdlet name::

    from typing import Annotated
    import typer
    from mailctl.cli import ServerOpt, WhatIfOpt, command, fail, home, load_settings

    @command("Start-Service")
    def start_service(
        name: Annotated[str, typer.Argument(help="Service name, e.g. MSExchangeIMAP4.")],
        server: ServerOpt = None,
    ) -> None:
        '''Start a service.'''
        from server.control import services as control   # import heavy things inside the function
        ...

That one registration answers to both spellings: ``mailctl start-service X --server MBX01``
and ``mailctl Start-Service X -Server MBX01`` (the cmdlet name lower-cased is the command
name; ``-ParamName`` is matched case-insensitively, by unique prefix, to the option whose
name without dashes is the same, e.g. ``-MaxConnectionFromSingleIP`` ->
``--max-connection-from-single-ip``; ``-Identity`` reaches the first positional argument).

Conventions the shared helpers give you:

* ``home()`` - the home folder (``--home`` anywhere on the line, else MAILCTL_HOME, else the
  default); ``load_settings()`` - the validated settings; ``local_server(settings, name)``;
  ``find_mailbox(settings, identity)`` - a mailbox's directory entry (settings.toml or LDAP).
* Read commands take ``output: OutputOpt = "table"`` and end with
  ``emit(rows, output, columns=[...])``: rows are dicts with JSON-ready values (a dict for one
  object, a list for many); table, Format-List style and JSON come out of that alone.
* Errors: ``fail("one clear sentence", allowed="...", code=2)`` - exit 2 for a bad value or
  usage, 1 (``code=1``) when the operation itself failed. Never print tracebacks for those.
* Boolean options are ``BoolOpt`` (a value like ``$true``/``false``; a bare option is refused,
  because bash drops an unquoted ``$false``); a plain ``bool`` option is a switch (-WhatIf);
  multi-valued options are made with ``list_option(...)`` (or come from ``model_options``).
* Set- commands take ``what_if: WhatIfOpt = False`` and write through
  ``server.settings.store.edit(home(), dry_run=what_if)``; ``report_changes`` prints them.
* Hooks: ``PROTOCOL_ENABLED`` / ``PROTOCOL_DISABLED`` are lists of callables
  ``(home, server_name, [service names]) -> None`` run after enable-/disable-pop3/imap4 wrote
  the StartupTypes (the runtime adds start/stop there); ``SERVICE_STATUS`` (callable
  ``(home, server_name, service) -> str``) fills get-service's Status column.

After adding or changing a command, run ``python -m mailctl.reference``: it regenerates
docs/cli.md, completions/ and mailctl/command_index.py (a test fails while they are out of
date).

Which modules a run imports: mailctl/command_index.py maps every command name to the module
that registers it, so `mailctl set-popsettings ...` imports protocol_settings.py alone (plus
the modules that add hooks, when a hook runs). `mailctl --help`, completion, an unknown name
or a stale index import every module. Keep imports at module level light anyway (typer,
stdlib, server.settings.*): they are paid by each run of the module's commands.

Where the parts live (this module re-exports them; command modules import from here):
registry.py (the app, ``command``, ``unsupported``, the hooks), options.py (option types and
``model_options``), updates.py (Set- helpers), context.py (home, settings, writes), errors.py
(``fail``, ``warn``), output.py (``emit``), loader.py (which command modules a run imports),
exchange.py (the Exchange spelling). None of them imports this module or a command module.
"""

from __future__ import annotations

import sys

import typer

from mailctl import exchange, output
from mailctl.context import (
    edit_settings,
    find_mailbox,
    home,
    load_settings,
    local_server,
    set_home_override,
    settings_written,
)
from mailctl.errors import CommandError, fail, validation_message, warn
from mailctl.loader import (
    click_group,
    hook_modules,
    load_commands,
    load_hook_modules,
    load_modules_for,
)
from mailctl.options import (
    BOOL_METAVAR,
    EXCHANGE_NAMES,
    FQDN_PLACEHOLDER,
    LIST_METAVAR,
    BoolOpt,
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    bool_option,
    field_choices,
    field_help,
    field_kind,
    format_value,
    is_windows_only,
    kebab,
    list_option,
    model_default,
    model_options,
    value_hint,
)
from mailctl.output import emit
from mailctl.registry import (
    COMMANDS,
    PROTOCOL_DISABLED,
    PROTOCOL_ENABLED,
    SERVICE_STATUS,
    UNSUPPORTED,
    UNSUPPORTED_MODULES,
    CommandInfo,
    app,
    command,
    unsupported,
)
from mailctl.updates import (
    add_remove,
    apply_updates,
    report_changes,
    require_values,
    update_fields,
)

try:  # recent typer vendors its own click; its exceptions are the ones raised
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import ClickException  # type: ignore[no-redef]

__all__ = [
    "BOOL_METAVAR",
    "COMMANDS",
    "EXCHANGE_NAMES",
    "FQDN_PLACEHOLDER",
    "LIST_METAVAR",
    "PROTOCOL_DISABLED",
    "PROTOCOL_ENABLED",
    "SERVICE_STATUS",
    "UNSUPPORTED",
    "UNSUPPORTED_MODULES",
    "BoolOpt",
    "CommandError",
    "CommandInfo",
    "OutputOpt",
    "ServerOpt",
    "WhatIfOpt",
    "add_remove",
    "app",
    "apply_updates",
    "bool_option",
    "click_group",
    "command",
    "edit_settings",
    "emit",
    "fail",
    "field_choices",
    "field_help",
    "field_kind",
    "find_mailbox",
    "format_value",
    "home",
    "hook_modules",
    "is_windows_only",
    "kebab",
    "list_option",
    "load_commands",
    "load_hook_modules",
    "load_modules_for",
    "load_settings",
    "local_server",
    "model_default",
    "model_options",
    "report_changes",
    "require_values",
    "run",
    "set_home_override",
    "settings_written",
    "unsupported",
    "update_fields",
    "validation_message",
    "value_hint",
    "warn",
]


def run(argv: list[str]) -> int:
    """Run one command line (either spelling); returns the exit code."""
    set_home_override(None)
    output.FORCED = output.CAPTURE = None
    try:
        group = click_group(exchange.command_words(argv))
        plan = exchange.translate(argv, group)
        return exchange.execute(plan, group)
    except CommandError as exc:
        print(f"mailctl: {exc.message}", file=sys.stderr)
        return exc.code
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:
        print(f"mailctl: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("mailctl: aborted.", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # an unreadable file, a read-only home: a sentence, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mailctl: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # settings problems found below a command: a sentence, no traceback
        from server.settings.store import SettingsError, SettingsMissing

        if not isinstance(exc, SettingsError):
            raise
        print(f"mailctl: {exc.message}", file=sys.stderr)
        return 1 if isinstance(exc, SettingsMissing) else 2
