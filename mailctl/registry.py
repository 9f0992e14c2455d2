"""The command registry: the typer application, the commands registered on it in both
spellings (see the docstring of mailctl/cli.py), the cmdlets declared unsupported, and the
hook lists other parts plug into."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailctl.context import set_home_override

if TYPE_CHECKING:
    from server.settings.paths import Home


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

# Hooks other parts plug into (see the docstring of mailctl/cli.py).
PROTOCOL_ENABLED: list[Callable[[Home, str, list[str]], None]] = []
PROTOCOL_DISABLED: list[Callable[[Home, str, list[str]], None]] = []
SERVICE_STATUS: list[Callable[[Home, str, str], str]] = []


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
