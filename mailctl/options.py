"""Option factories for commands: the shared options (--output, --server, --what-if), Boolean
and multi-valued options in the Exchange style, and one option per field of a settings model
(help, allowed values and default read from the model), so no parameter is ever missing from
the CLI."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Annotated, Any

import typer


def kebab(name: str) -> str:
    """`MaxConnectionFromSingleIP` -> `max-connection-from-single-ip`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name)
    return spaced.replace("_", "-").lower()


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


def format_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)
