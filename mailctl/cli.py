"""The mailctl command registry and the helpers every command shares.

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
  default); ``load_settings()`` - the validated settings; ``local_server(settings, name)``.
* Read commands take ``output: OutputOpt = "table"`` and end with
  ``emit(rows, output, columns=[...])``: rows are dicts with JSON-ready values (a dict for one
  object, a list for many); table, Format-List style and JSON come out of that alone.
* Errors: ``fail("one clear sentence", allowed="...", code=2)`` - exit 2 for a bad value or
  usage, 1 (``code=1``) when the operation itself failed. Never print tracebacks for those.
* Boolean options are ``BoolOpt`` (a value like ``$true``/``false``; a bare option is refused,
  because bash drops an unquoted ``$false``); a plain ``bool`` option is a switch (-WhatIf); multi-valued options use ``ListOpt``.
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
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

try:  # recent typer vendors its own click; its exceptions are the ones raised
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import ClickException  # type: ignore[no-redef]

if TYPE_CHECKING:
    from server.settings.models import Server, Settings
    from server.settings.paths import Home


# --------------------------------------------------------------------------- the app

app = typer.Typer(
    name="mailctl",
    help="Administer mailctl (POP3/IMAP4 mail access) with the Exchange cmdlets. "
    "Every command also runs in the Exchange spelling: `mailctl Set-PopSettings -LoginType "
    "PlainTextLogin` is `mailctl set-popsettings --login-type PlainTextLogin`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help", "-h"]},
    # click's plain help: it wraps descriptions and never cuts an option name at 80 columns
    # (rich's boxes did: "--internal-connection…"), and --help does not import rich.
    rich_markup_mode=None,
)


@dataclass
class CommandInfo:
    """What the Exchange-spelling translator and the docs need to know about a command."""

    cmdlet: str  # Exchange spelling, e.g. "Set-PopSettings"
    name: str  # kebab-case command name, e.g. "set-popsettings"
    func: Callable[..., Any]
    read: bool = False
    aliases: tuple[str, ...] = ()
    module: str = ""  # the module that registered it (for mailctl/command_index.py)


COMMANDS: dict[str, CommandInfo] = {}
# Cmdlets a reference example uses that have no meaning here: name -> why.
UNSUPPORTED: dict[str, str] = {}
# name -> the module that declared it unsupported (for mailctl/command_index.py).
UNSUPPORTED_MODULES: dict[str, str] = {}

# Hooks other parts plug into (see module docstring).
PROTOCOL_ENABLED: list[Callable[[Home, str, list[str]], None]] = []
PROTOCOL_DISABLED: list[Callable[[Home, str, list[str]], None]] = []
SERVICE_STATUS: list[Callable[[Home, str, str], str]] = []


def kebab(name: str) -> str:
    """`MaxConnectionFromSingleIP` -> `max-connection-from-single-ip`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name)
    return spaced.replace("_", "-").lower()


def command(
    cmdlet: str,
    *,
    read: bool = False,
    aliases: Iterable[str] = (),
    params: list[inspect.Parameter] | None = None,
    hidden: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `func` as the cmdlet `cmdlet` (both spellings).

    `params`: extra typer parameters generated at run time (e.g. one option per model field,
    see `model_options`); their values reach `func` as one dict keyword argument `values`
    holding only the options the user gave, keyed by the parameter's name.
    `aliases`: further cmdlet names that run the same command (e.g. "Get-CASMailbox").
    """
    name = cmdlet.lower()

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in COMMANDS:
            raise RuntimeError(f"command {cmdlet} is registered twice")
        target = _with_generated_params(func, params) if params else func
        app.command(name=name, hidden=hidden, help=inspect.getdoc(func))(target)
        info = CommandInfo(cmdlet, name, target, read, tuple(aliases), func.__module__)
        COMMANDS[name] = info
        for alias in info.aliases:
            COMMANDS.setdefault(alias.lower(), info)
            app.command(name=alias.lower(), hidden=True, help=inspect.getdoc(func))(target)
        return func

    return register


def unsupported(cmdlet: str, why: str) -> None:
    """A cmdlet the reference mentions that only makes sense on Windows: fail clearly."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    UNSUPPORTED[cmdlet.lower()] = why
    UNSUPPORTED_MODULES[cmdlet.lower()] = caller


def _with_generated_params(
    func: Callable[..., Any], params: list[inspect.Parameter]
) -> Callable[..., Any]:
    import typing

    # Resolve the function's own (string, under `from __future__ import annotations`)
    # annotations in its module: typer evaluates the wrapper's in this one.
    resolved = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=resolved.get(p.name, p.annotation))
        for p in inspect.signature(func).parameters.values()
        if p.name != "values"
    ]
    generated = {p.name for p in params}

    def wrapper(**kwargs: Any) -> Any:
        values = {k: kwargs.pop(k) for k in list(kwargs) if k in generated}
        values = {k: v for k, v in values.items() if v is not None}
        return func(**kwargs, values=values)

    wrapper.__name__ = func.__name__
    wrapper.__module__ = func.__module__
    wrapper.__doc__ = func.__doc__
    wrapper.__signature__ = inspect.Signature([*own, *params])  # type: ignore[attr-defined]
    hints = {p.name: p.annotation for p in own}
    hints.update({p.name: p.annotation for p in params})
    wrapper.__annotations__ = hints
    return wrapper


# --------------------------------------------------------------------------- option types

# long option -> Exchange parameter name, where kebab-case loses the capitals (`...IP`).
EXCHANGE_NAMES: dict[str, str] = {}
BOOL_METAVAR = "BOOL"
LIST_METAVAR = "LIST"


def bool_option(*names: str, help: str = "", hidden: bool = False) -> Any:
    """An option taking $true/$false (or true/false/1/0); given alone it is refused."""
    return typer.Option(*names, help=help, metavar=BOOL_METAVAR, hidden=hidden)


def list_option(*names: str, help: str = "") -> Any:
    """A multi-valued option: `{a,b}`, `a,b`, `@("a","b")` or several words."""
    return typer.Option(*names, help=help, metavar=LIST_METAVAR)


OutputOpt = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        help="table (default), list (Format-List style: every property) or json (stable, "
        "for scripts).",
        metavar="table|list|json",
    ),
]
ServerOpt = Annotated[
    str | None, typer.Option("--server", help="The server (default: the local server).")
]
WhatIfOpt = Annotated[
    bool, typer.Option("--what-if", help="Show what would change; write nothing.")
]
BoolOpt = Annotated[str | None, bool_option()]


def model_options(
    model: type[Any],
    *,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> list[inspect.Parameter]:
    """One typer option per pydantic field: --kebab-name, help from the field's description,
    default and allowed values, so no parameter of the model is ever missing from the CLI.
    Parameter names are the field names (the `values` dict is keyed by field name)."""
    skip = set(exclude)
    wanted = list(only) if only is not None else None
    params = []
    for fname, finfo in model.model_fields.items():
        if fname in skip or (wanted is not None and fname not in wanted):
            continue
        kind = field_kind(finfo)
        help_text = field_help(model, fname)
        names = (f"--{kebab(fname)}",)
        EXCHANGE_NAMES[names[0]] = fname
        if kind == "bool":
            opt = bool_option(*names, help=help_text)
        elif kind == "list":
            opt = list_option(*names, help=help_text)
        else:
            choices = field_choices(finfo)
            metavar = "|".join(choices) if choices else kind.upper()
            opt = typer.Option(*names, help=help_text, metavar=metavar)
        params.append(
            inspect.Parameter(
                fname,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[str | None, opt],
            )
        )
    return params


def field_kind(finfo: Any) -> str:
    """bool | list | value, from a pydantic FieldInfo (looks through Annotated)."""
    ann = finfo.annotation
    origin = getattr(ann, "__origin__", None)
    if ann is bool:
        return "bool"
    if origin is list:
        return "list"
    return "value"


def field_choices(finfo: Any) -> list[str]:
    """The allowed enum values of a field (for help and completions), else []."""
    from enum import Enum

    ann = finfo.annotation
    if isinstance(ann, type) and issubclass(ann, Enum):
        return [m.value for m in ann]
    args = getattr(ann, "__args__", ())
    if getattr(ann, "__origin__", None) is list and args:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, Enum):
            return [m.value for m in inner]
    return []


def is_windows_only(model: type[Any], fname: str) -> bool:
    extra = model.model_fields[fname].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("windows_only"))


FQDN_PLACEHOLDER = "server-fqdn.invalid"  # shown as <FQDN> in help


def model_default(model: type[Any], fname: str) -> Any:
    """The JSON default of a field when the model can be built from defaults alone. For POP3
    and IMAP4 settings whose default depends on the server (bindings, connection settings,
    certificate name), what a new server gets with Exchange's ports."""
    try:
        value = model().model_dump(mode="json").get(fname)
    except Exception:  # noqa: BLE001 - models with required fields have no such defaults
        return None
    if value in (None, []) and model.__name__ in ("PopSettings", "ImapSettings"):
        from server.settings.models import PortPlan, default_server

        server = default_server("MBX01", FQDN_PLACEHOLDER, PortPlan())
        value = getattr(server, model.__name__).model_dump(mode="json").get(fname)
    return value


def field_help(model: type[Any], fname: str) -> str:
    finfo = model.model_fields[fname]
    parts = [finfo.description or ""]
    choices = field_choices(finfo)
    if choices:
        parts.append("Allowed: " + ", ".join(choices) + ".")
    default = model_default(model, fname)
    if default is not None:
        shown = format_value(default).replace(FQDN_PLACEHOLDER, "<FQDN>")
        shown = "empty ($null)" if default == [] else shown
        parts.append(f"Default: {shown}" + ("" if shown.endswith(".") else "."))
    if is_windows_only(model, fname):
        parts.append("Accepted and stored; no effect here (Windows only).")
    return " ".join(p for p in parts if p)


# --------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------------- home, settings

_home_override: str | None = None


def set_home_override(path: str | None) -> None:
    global _home_override
    _home_override = path


def home() -> Home:
    from server.settings.host import adopt_server
    from server.settings.paths import Home

    where = Home.resolve(_home_override or os.environ.get("MAILCTL_HOME") or None)
    adopt_server(where.root)  # on a host of a several-host organization: its server
    return where


def load_settings() -> Settings:
    """The validated settings of home(); also refreshes the fast path's cache."""
    from server.settings import store

    try:
        snap = store.load(home())
    except store.SettingsError as exc:
        fail(exc.message, code=1)
    from mailctl import fast

    fast.write_cache(home(), snap)
    return snap.settings


def local_server(settings: Settings, name: str | None = None) -> tuple[str, Server]:
    """The server `name` (case-insensitive), else the local one: MAILCTL_SERVER, the only
    server, the one whose FQDN is this host's, or the first in the file."""
    from mailctl.views import pick_server

    key = pick_server(settings.Servers, name)
    if key is None:
        wanted = name or os.environ.get("MAILCTL_SERVER")
        fail(f"there is no server {wanted!r}", allowed=", ".join(settings.Servers))
    return key, settings.Servers[key]


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


def apply_updates(
    model: type[Any], current: Any, values: dict[str, Any], label: str
) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """Validate `values` (field -> raw text) on top of `current` through the model.
    Returns the new model and {field: (old json value, new json value)} for what changed.
    A bad value fails with exit 2 naming the parameter, the value and what is allowed."""
    from pydantic import ValidationError

    data = current.model_dump()
    data.update(values)
    try:
        for fname, raw in values.items():
            if (
                isinstance(raw, str)
                and raw.lstrip().startswith("@{")
                and fname in model.model_fields
                and field_kind(model.model_fields[fname]) == "list"
            ):
                data[fname] = add_remove(model, current, fname, raw)
        new = model.model_validate(data)
    except ValidationError as exc:

        def shown(f: str) -> str:  # a value with a line break would break the message
            text = str(values.get(f, ""))
            return f"-{f} {text if text.isprintable() else repr(text)}".rstrip()

        message = validation_message(exc, shown)
        first = exc.errors()[0]["loc"][:1] if exc.errors() else ()
        hint = value_hint(model, str(first[0])) if first else ""
        if hint and "allowed" not in message and "write" not in message:
            message += f"; allowed: {hint}"
        fail(f"{label}: {message}")
    except ValueError as exc:
        fail(f"{label}: {exc}")
    old_dump, new_dump = current.model_dump(mode="json"), new.model_dump(mode="json")
    changes = {
        k: (old_dump.get(k), new_dump.get(k)) for k in values if old_dump.get(k) != new_dump.get(k)
    }
    return new, changes


def add_remove(model: type[Any], current: Any, fname: str, raw: str) -> list[Any]:
    """PowerShell's multi-value edit `@{Add="a","b"; Remove="c"}`: the current list with
    `Add` appended (when not there yet) and `Remove` taken out. Items are compared in their
    canonical spelling, so `Remove` matches however the item was written."""
    body = raw.strip()
    if not body.endswith("}"):
        raise ValueError(f'-{fname} {raw}: write @{{Add="a","b"; Remove="c"}}')
    parts: dict[str, str] = {}
    for piece in body[2:-1].split(";"):
        if not piece.strip():
            continue
        key, sep, items = piece.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("add", "remove") or key in parts:
            raise ValueError(f"-{fname} {raw}: only Add= and Remove=, once each, separated by ';'")
        parts[key] = items

    def canonical(text: str) -> list[Any]:
        dumped = current.model_dump()
        dumped[fname] = text
        return model.model_validate(dumped).model_dump(mode="json")[fname]

    def key(item: Any) -> str:  # host names, addresses, enum names: case-insensitive
        return str(item).lower()

    have = current.model_dump(mode="json")[fname]
    removed = {key(x) for x in canonical(parts.get("remove", "$null"))}
    kept = [x for x in have if key(x) not in removed]
    for item in canonical(parts.get("add", "$null")):
        if key(item) not in {key(x) for x in kept}:
            kept.append(item)
    return kept


def require_values(values: dict[str, Any], label: str) -> None:
    """A Set- command given no parameter has nothing to do: say so, exit 2."""
    if not values:
        fail(f"{label}: give at least one parameter to change (see --help)")


def update_fields(
    session: Any,
    path: tuple[str, ...],
    model: type[Any],
    current: Any,
    values: dict[str, Any],
    label: str,
) -> dict[str, tuple[Any, Any]]:
    """`apply_updates`, then write each changed field below `path` in the edit session
    (only those: the admin's formatting and comments elsewhere stay). Returns the changes."""
    new, changes = apply_updates(model, current, values, label)
    dumped = new.model_dump(mode="json")
    for field in changes:
        session.set((*path, field), dumped[field])
    return changes


def value_hint(model: type[Any], fname: str) -> str:
    """What a field accepts, for messages that do not say it already."""
    from server.settings.types import ConnectionSetting, IPEndPoint

    finfo = model.model_fields.get(fname)
    if finfo is None:
        return ""
    choices = field_choices(finfo)
    if choices:
        return ", ".join(choices)
    ann = finfo.annotation
    inner = (getattr(ann, "__args__", None) or (None,))[0]
    if inner is IPEndPoint:
        return "IPv4:port or [IPv6]:port, e.g. 0.0.0.0:995 (several: {a,b})"
    if inner is ConnectionSetting:
        return "HostName:Port:SSL, HostName:Port:TLS or HostName:Port: (several: {a,b})"
    if ann is bool:
        return "$true, $false"
    return ""


def report_changes(target: str, changes: dict[str, tuple[Any, Any]], what_if: bool) -> None:
    """`What if: ...` lines for -WhatIf; otherwise one line per change (stderr-free)."""
    if not changes:
        print(f"{target}: nothing to change.")
        return
    for key, (old, new) in changes.items():
        prefix = "What if: would set" if what_if else "Set"
        print(f"{prefix} {key} on {target} from {format_value(old)} to {format_value(new)}.")


def format_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


# --------------------------------------------------------------------------- output


def emit(
    data: dict[str, Any] | list[dict[str, Any]],
    output: str,
    *,
    columns: list[str] | None = None,
    notes: dict[str, str] | None = None,
    title: str | None = None,
) -> None:
    """Print `data` as a rich table, Format-List style or stable JSON (see mailctl.output)."""
    from mailctl import output as out

    out.emit(data, output, columns=columns, notes=notes, title=title)


# --------------------------------------------------------------------------- running


@app.callback()
def _root(
    home_path: Annotated[
        str | None,
        typer.Option(
            "--home",
            help="Home folder (default: MAILCTL_HOME, else /var/lib/mailctl for root, "
            "~/.local/share/mailctl otherwise). Accepted anywhere on the line.",
        ),
    ] = None,
) -> None:
    if home_path:
        set_home_override(home_path)


def load_commands() -> None:
    """Import every module in mailctl/commands/ (help, completion, the generators)."""
    from mailctl import commands

    commands.import_all()


def load_modules_for(names: Iterable[str]) -> bool:
    """Import only the modules that register `names` (command names, any case), as
    mailctl/command_index.py says. False when a name is not in the index or its module did not
    register it (a new or moved command): the caller then loads every module."""
    import importlib

    try:
        from mailctl.command_index import COMMANDS as INDEX
    except ImportError:  # pragma: no cover - the generated file is missing
        return False
    wanted = [n.lower().removesuffix(".ps1") for n in names]
    if not wanted or any(n not in INDEX for n in wanted):
        return False
    for module in sorted({INDEX[n] for n in wanted}):
        try:
            importlib.import_module(f"{__package__}.commands.{module}")
        except Exception:  # noqa: BLE001 - load_commands reports it with the other modules
            return False
    return all(n in COMMANDS or n in UNSUPPORTED for n in wanted)


def load_hook_modules() -> None:
    """Import the modules that add to PROTOCOL_ENABLED / PROTOCOL_DISABLED / SERVICE_STATUS
    (a run that imported only its own command's module has not seen them yet)."""
    import importlib

    try:
        from mailctl.command_index import HOOKS
    except ImportError:  # pragma: no cover - the generated file is missing
        load_commands()
        return
    for module in HOOKS:
        importlib.import_module(f"{__package__}.commands.{module}")


def hook_modules() -> list[str]:
    """Modules of mailctl/commands/ whose functions sit in the hook lists (for the index)."""
    prefix = f"{__package__}.commands."
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
    from mailctl import commands

    rank = {f"{commands.__name__}.{m}": i for i, m in enumerate(commands.module_names())}

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


def settings_written(where: Home) -> None:
    """Tell the running services of `where` to reload now (they also watch the file, this
    only makes it immediate). Costs a directory listing when nothing runs."""
    try:
        if not any(where.run.glob("*.pid")):
            return
    except OSError:
        return
    from server.control import services as control

    try:
        control.signal_reload(where)
    except Exception as exc:  # noqa: BLE001 - the write succeeded; the watch still reloads
        warn(f"note: could not signal the running services to reload ({exc})")


@contextlib.contextmanager
def edit_settings(what_if: bool = False) -> Iterator[Any]:
    """`server.settings.store.edit(home(), dry_run=what_if)`, then - when something was
    written - signal the running services to reload (see settings_written)."""
    from server.settings import store

    where = home()
    with store.edit(where, dry_run=what_if) as session:
        yield session
    if not what_if and session.changed():
        settings_written(where)
        # Leave the fast path's cache current, so a script's next get- is fast too.
        with contextlib.suppress(CommandError):
            load_settings()


def run(argv: list[str]) -> int:
    """Run one command line (either spelling); returns the exit code."""
    from mailctl import exchange, output

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
