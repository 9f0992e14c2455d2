"""The Exchange spelling: a cmdlet line, as it reaches us through a POSIX shell, turned into
the kebab-case command line click parses.

    Set-PopSettings -ExternalConnectionSetting {a:995:SSL} -LoginType:PlainTextLogin
 -> set-popsettings --external-connection-settings=a:995:SSL --login-type=PlainTextLogin

Rules (PowerShell's, as far as a POSIX shell lets them through):
* cmdlet and parameter names are case-insensitive; a parameter may be abbreviated to any
  unique prefix (which also makes the singular `-ExternalConnectionSetting` work);
* `-Param:value` and `-Param value`; `-Identity x` is the positional identity;
* a Boolean parameter with no value is refused: bash removed an unquoted `$false`/`$true`,
  and guessing would turn `-PopEnabled $false` into true; only switches (-WhatIf) stand alone;
* a multi-valued parameter takes every following word up to the next parameter, because bash
  splits `{a,b}` (brace expansion) and `a, b` into several words;
* `-Confirm`, `-Verbose`, `-ErrorAction X` are accepted and ignored;
* `'|' Format-List [props]`, `'|' Format-Table`, `'|' Select-Object props` choose the output;
  `Get-X ... '|' Set-X ...` runs the Set- command once per object the Get- command returned.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from typing import Any

from mailctl.context import set_home_override
from mailctl.errors import fail
from mailctl.options import BOOL_METAVAR, EXCHANGE_NAMES, LIST_METAVAR
from mailctl.registry import COMMANDS, UNSUPPORTED

# Parameters and commands are typer's click objects (typer may vendor click): typed Any and
# told apart by `param_type_name`.
Command = Any
Param = Any


def is_argument(param: Param) -> bool:
    return param.param_type_name == "argument"


IGNORED_SWITCHES = {"confirm", "verbose", "debug", "force"}
IGNORED_VALUED = {"erroraction", "warningaction", "domaincontroller", "outvariable"}
FORMATTERS = {
    "format-list": "list",
    "fl": "list",
    "format-table": "table",
    "ft": "table",
    "select-object": None,
    "select": None,
}


@dataclass
class Stage:
    name: str
    args: list[str]


@dataclass
class Plan:
    stages: list[Stage]
    output: str | None = None  # forced by `| Format-List` / `| Format-Table`
    properties: list[str] = field(default_factory=list)


def norm(name: str) -> str:
    return name.lstrip("-").replace("-", "").replace("_", "").lower()


def is_param(token: str) -> bool:
    """`-Name`, `-Name:value`, `--name`: a parameter, not a value such as `-1`."""
    body = token[2:] if token.startswith("--") else token[1:] if token.startswith("-") else ""
    return bool(body) and (body[0].isalpha() or body[0] == "?")


def _take_home(argv: list[str]) -> list[str]:
    rest: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            rest.append(token)
            rest.extend(tokens)
            break
        head, sep, value = token.partition("=" if token.startswith("--") else ":")
        if is_param(token) and norm(head) == "home":
            value = value if sep else next(tokens, "")
            if not value:
                fail("--home needs a folder")
            set_home_override(value)
            continue
        rest.append(token)
    return rest


def _split_pipeline(argv: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for token in argv:
        if token == "|":
            segments.append([])
        else:
            segments[-1].append(token)
    if any(not seg for seg in segments):
        fail("empty pipeline element around '|'")
    return segments


def command_words(argv: list[str]) -> list[str] | None:
    """The command names a line runs (one per pipeline stage), so that only their modules
    are imported; None for a line that needs every command (help, no command)."""
    argv = _take_home(list(argv))
    if not argv or argv[0].startswith("-"):
        return None
    words = [seg[0] for seg in _split_pipeline(argv) if seg[0].lower() not in FORMATTERS]
    return words or None


def translate(argv: list[str], group: Command) -> Plan:
    argv = _take_home(list(argv))
    if not argv or argv[0].startswith("-"):
        return Plan([Stage("", argv or ["--help"])])
    plan = Plan([])
    for segment in _split_pipeline(argv):
        head = segment[0].lower()
        if head in FORMATTERS:
            _formatter(plan, head, segment[1:])
            continue
        if plan.output is not None:
            fail(f"{segment[0]} cannot follow a Format- command")
        name = resolve_command(segment[0], group)
        plan.stages.append(Stage(name, translate_params(group.commands[name], segment[1:])))
    if not plan.stages:
        fail("a pipeline must start with a command")
    return plan


def _formatter(plan: Plan, head: str, args: list[str]) -> None:
    if FORMATTERS[head]:
        plan.output = FORMATTERS[head]
    words = [a for a in args if not is_param(a) or norm(a.split(":")[0]) == "property"]
    words = [a for a in words if not is_param(a)]
    plan.properties = [p for w in words for p in w.split(",") if p.strip() and p != "*"]
    if plan.output is None:
        plan.output = "list"


def resolve_command(word: str, group: Command) -> str:
    name = word.lower()
    if name.endswith(".ps1"):
        name = name[:-4]
    if name in group.commands:
        return name
    if name in UNSUPPORTED:
        fail(f"{word} is not supported here: {UNSUPPORTED[name]}")
    close = difflib.get_close_matches(name, list(group.commands), n=1, cutoff=0.6)
    hint = (
        f"; did you mean {COMMANDS[close[0]].cmdlet if close[0] in COMMANDS else close[0]}?"
        if close
        else ""
    )
    fail(f"unknown command {word}{hint} (see `mailctl --help`)")


def _param_table(command: Command) -> dict[str, Param]:
    table: dict[str, Param] = {}
    for param in command.params:
        if is_argument(param):
            table[norm(param.name or "")] = param
        else:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    table.setdefault(norm(opt), param)
    return table


def match_param(word: str, command: Command) -> Param | None:
    """Exact name, then a unique prefix, then singular/plural; None when the word is one of
    the ignored PowerShell common parameters."""
    for param in command.params:
        if word in getattr(param, "opts", ()):
            return param  # a short option such as -o, or the exact kebab spelling
    table = _param_table(command)
    key = norm(word)
    if key in table:
        return table[key]
    candidates = {id(p): p for k, p in table.items() if k.startswith(key)}
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    if len(candidates) > 1:
        names = sorted(exchange_name(p) for p in candidates.values())
        fail(f"{word} is ambiguous", allowed=", ".join(names))
    for variant in (key + "s", key.removesuffix("s")):
        if variant in table:
            return table[variant]
    if key in IGNORED_SWITCHES or key in IGNORED_VALUED:
        return None
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.5)
    hint = f"; did you mean -{exchange_name(table[close[0]])}?" if close else ""
    fail(f"{cmdlet_of(command)}: unknown parameter {word}{hint}")


def cmdlet_of(command: Command) -> str:
    info = COMMANDS.get(command.name or "")
    return info.cmdlet if info else command.name or ""


def exchange_name(param: Param) -> str:
    if is_argument(param):
        return (param.name or "").title().replace("_", "")
    long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    if long in EXCHANGE_NAMES:
        return EXCHANGE_NAMES[long]
    return "".join(part.capitalize() for part in long.lstrip("-").split("-"))


def _long(param: Param) -> str:
    return next(o for o in param.opts if o.startswith("--"))


def translate_params(command: Command, args: list[str]) -> list[str]:
    out: list[str] = []
    seen: dict[int, str] = {}  # parameter -> how it was first written
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            out.extend(args[i - 1 :])
            break
        if not is_param(token):
            out.append(token)
            continue
        sep = "=" if token.startswith("--") else ":"
        word, has_inline, inline = token.partition(sep)
        if (
            token.startswith("--")
            and norm(word) == "help"
            or norm(word) in {"?", "help"}
            or token == "-h"
        ):
            out.append("--help")
            continue
        param = match_param(word, command)
        if param is not None and not is_argument(param):
            # Last-wins would silently drop the first value of a script's typo.
            if id(param) in seen:
                fail(
                    f"{cmdlet_of(command)}: -{exchange_name(param)} is given twice ({seen[id(param)]}"
                    f" and {word}); give it once (a multi-valued parameter takes a list: a,b)"
                )
            seen[id(param)] = word
        if param is None:  # an ignored common parameter
            if (
                norm(word) in IGNORED_VALUED
                and not has_inline
                and i < len(args)
                and not is_param(args[i])
            ):
                i += 1
            continue
        if not is_argument(param) and param.is_flag:
            if has_inline and inline.strip().lower() in {"$false", "false", "0"}:
                continue
            # --demo/--no-demo: the word may name the off side, which must stay off.
            off = [o for o in param.secondary_opts if norm(o) == norm(word)]
            out.append(off[0] if off else _long(param))
            continue
        metavar = getattr(param, "metavar", None)
        if has_inline:
            values = [inline]
        else:
            values = []
            while i < len(args) and not is_param(args[i]):
                values.append(args[i])
                i += 1
                if metavar != LIST_METAVAR:
                    break
        if is_argument(param):
            if not values:
                fail(f"{cmdlet_of(command)}: -{exchange_name(param)} needs a value")
            out.extend(values)
            continue
        if not values:
            if metavar != BOOL_METAVAR:
                fail(f"{cmdlet_of(command)}: -{exchange_name(param)} needs a value")
            # Most likely bash removed an unquoted $false or $true: guessing would turn
            # `-PopEnabled $false` into "enabled". Only real switches (-WhatIf) stand alone.
            fail(
                f"{cmdlet_of(command)}: -{exchange_name(param)} needs a value: $true or $false. "
                f"The shell removes an unquoted $false or $true, so write '$false' in single "
                f"quotes, or false (true)."
            )
        if metavar == BOOL_METAVAR and values == [""]:
            fail(
                f"{cmdlet_of(command)}: -{exchange_name(param)} got an empty value (the shell expanded "
                f'"$false"/"$true" to nothing); write \'$false\' in single quotes or false'
            )
        value = ",".join(v.rstrip(",") for v in values) if len(values) > 1 else values[0]
        out.append(f"{_long(param)}={value}")
    return out


def invoke(group: Command, args: list[str]) -> int:
    result: Any = group.main(args=args, prog_name="mailctl", standalone_mode=False)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def execute(plan: Plan, group: Command) -> int:
    from mailctl import output

    output.FORCED = (plan.output, plan.properties) if plan.output else None
    first = plan.stages[0]
    head = [first.name] if first.name else []
    if len(plan.stages) == 1:
        return invoke(group, [*head, *first.args])
    # Get-X ... | Set-X ...: the Get- command's objects become the Set- command's identities.
    output.CAPTURE = []
    saved = sys.stdout
    try:
        import io

        sys.stdout = io.StringIO()
        code = invoke(group, [*head, *first.args, "--output", "json"])
    finally:
        sys.stdout = saved
    identities, output.CAPTURE = output.CAPTURE, None
    if code:
        return code
    for stage in plan.stages[1:]:
        for identity in identities:
            code = invoke(group, [stage.name, identity, *stage.args]) or code
    return code
