"""Generated from the registered commands: shell completions (bash, zsh, fish), the CLI
reference docs/cli.md and the command index mailctl/command_index.py (which module registers
which command, so a run imports only that one). Tests regenerate them and fail when the
files in the repository differ; refresh them with `python -m mailctl.reference`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mailctl import cli

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "bash": ROOT / "completions" / "mailctl.bash",
    "zsh": ROOT / "completions" / "_mailctl",
    "fish": ROOT / "completions" / "mailctl.fish",
}
DOCS = ROOT / "docs" / "cli.md"
INDEX = ROOT / "mailctl" / "command_index.py"
BOOL_CHOICES = ["true", "false"]


@dataclass
class Opt:
    long: str
    exchange: str
    metavar: str | None
    help: str
    choices: list[str]
    flag: bool


@dataclass
class Cmd:
    name: str
    cmdlet: str
    help: str
    arguments: list[tuple[str, str, bool]]  # (name, help, required)
    options: list[Opt]


def commands() -> list[Cmd]:
    from mailctl.exchange import exchange_name

    group = cli.click_group()
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        info = cli.COMMANDS.get(name)
        if command.hidden or info is None or info.name != name:
            continue
        arguments, options = [], []
        for param in command.params:
            if param.param_type_name == "argument":
                arguments.append((param.name, getattr(param, "help", "") or "", param.required))
                continue
            long = next(o for o in param.opts if o.startswith("--"))
            if getattr(param, "hidden", False) or long == "--help":
                continue
            metavar = param.metavar
            if metavar == cli.BOOL_METAVAR:
                choices = BOOL_CHOICES
            elif metavar and "|" in metavar:
                choices = metavar.split("|")
            else:
                choices = []
            options.append(
                Opt(
                    long,
                    exchange_name(param),
                    metavar,
                    param.help or "",
                    choices,
                    bool(param.is_flag),
                )
            )
        doc = (command.help or "").strip()
        found.append(Cmd(name, info.cmdlet, doc, arguments, options))
    return found


def _words(items: list[str]) -> str:
    return " ".join(items)


# --------------------------------------------------------------------------- completions


def _choice_cases(cmds: list[Cmd], case: str) -> list[str]:
    """bash/zsh: `case` (fields name, long, exchange, words) for each option with choices."""
    return [
        case.format(name=c.name, long=o.long, exchange=o.exchange, words=_words(o.choices))
        for c in cmds
        for o in c.options
        if o.choices
    ]


def _option_cases(cmds: list[Cmd], case: str) -> list[str]:
    """bash/zsh: `case` (fields name, words) per command with every option word it takes."""
    return [
        case.format(
            name=c.name,
            words=_words(
                [o.long for o in c.options]
                + ["--home", "--help"]
                + [f"-{o.exchange}" for o in c.options]
            ),
        )
        for c in cmds
    ]


HEADER = "generated from the mailctl commands by `mailctl completion --shell {shell}`; do not edit"


def bash() -> str:
    cmds = commands()
    names = [c.name for c in cmds] + [c.cmdlet for c in cmds]
    out = [
        f"# {HEADER.format(shell='bash')}",
        "# install: copy to /etc/bash_completion.d/mailctl, or `source` it from ~/.bashrc",
        "_mailctl() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    local IFS=$'\\n'",
        "    if [[ $COMP_CWORD -eq 1 ]]; then",
        f'        COMPREPLY=($(IFS=\' \' compgen -W "{_words(names)}" -- "$cur"))',
        "        return",
        "    fi",
        '    local cmd="${COMP_WORDS[1],,}" opts="" values=""',
        '    case "$cmd $prev" in',
    ]
    out += _choice_cases(cmds, '        "{name} {long}"|"{name} -{exchange}") values="{words}" ;;')
    out += [
        "    esac",
        "    if [[ -n $values ]]; then",
        '        COMPREPLY=($(IFS=\' \' compgen -W "$values" -- "$cur"))',
        "        return",
        "    fi",
        '    case "$cmd" in',
    ]
    out += _option_cases(cmds, '        {name}) opts="{words}" ;;')
    out += [
        "    esac",
        '    COMPREPLY=($(IFS=\' \' compgen -W "$opts" -- "$cur"))',
        "}",
        "complete -o default -F _mailctl mailctl",
        "",
    ]
    return "\n".join(out)


def zsh() -> str:
    cmds = commands()
    names = [c.name for c in cmds] + [c.cmdlet for c in cmds]
    out = [
        "#compdef mailctl",
        f"# {HEADER.format(shell='zsh')}",
        "# install: copy to a folder in $fpath as _mailctl (then compinit), or `source` it",
        "_mailctl() {",
        "    local -a opts values",
        "    if (( CURRENT == 2 )); then",
        f"        compadd -- {_words(names)}",
        "        return",
        "    fi",
        "    local cmd=${(L)words[2]} prev=${words[CURRENT-1]}",
        '    case "$cmd $prev" in',
    ]
    out += _choice_cases(cmds, "        ('{name} {long}'|'{name} -{exchange}') values=({words}) ;;")
    out += [
        "    esac",
        "    if (( ${#values} )); then",
        "        compadd -- $values",
        "        return",
        "    fi",
        '    case "$cmd" in',
    ]
    out += _option_cases(cmds, "        ({name}) opts=({words}) ;;")
    out += [
        "    esac",
        "    compadd -- $opts",
        "    _files",
        "}",
        "if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then",
        '    _mailctl "$@"',
        "else",
        "    compdef _mailctl mailctl",
        "fi",
        "",
    ]
    return "\n".join(out)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish() -> str:
    cmds = commands()
    out = [
        f"# {HEADER.format(shell='fish')}",
        "# install: copy to ~/.config/fish/completions/mailctl.fish",
        "complete -c mailctl -f",
    ]
    for c in cmds:
        summary = c.help.split("\n")[0].split(". ")[0].rstrip(".")
        for word in (c.name, c.cmdlet):
            out.append(
                f"complete -c mailctl -n __fish_use_subcommand -a {word} -d {_fish_quote(summary)}"
            )
    for c in cmds:
        cond = f"'__fish_seen_subcommand_from {c.name} {c.cmdlet}'"
        for o in c.options:
            desc = _fish_quote(o.help.split(". ")[0][:80]) if o.help else "''"
            takes = (
                ""
                if o.flag
                else (f" -xa {_fish_quote(' '.join(o.choices))}" if o.choices else " -r")
            )
            out.append(f"complete -c mailctl -n {cond} -l {o.long[2:]}{takes} -d {desc}")
            out.append(f"complete -c mailctl -n {cond} -o {o.exchange}{takes} -d {desc}")
    out.append("")
    return "\n".join(out)


GENERATORS = {"bash": bash, "zsh": zsh, "fish": fish}


# --------------------------------------------------------------------------- docs/cli.md

INTRO = """\
# mailctl command reference

Generated from the commands themselves (`python -m mailctl.reference` rewrites this file and
the shell completions; a test fails when they are out of date).

## Two spellings, one command

Every command runs in kebab-case or as the Exchange cmdlet, verbatim after the word `mailctl`:

```
mailctl set-popsettings --login-type PlainTextLogin
mailctl Set-PopSettings -LoginType PlainTextLogin
mailctl Set-ImapSettings -ExternalConnectionSettings {mail.contoso.com:993:SSL} -LoginType:PlainTextLogin
mailctl Set-ReceiveConnector "Client Frontend MBX01" -AdvertiseClientSettings '$true' -FQDN mail.contoso.com
mailctl Set-CASMailbox alice -PopEnabled '$false'
```

* Cmdlet and parameter names and enum values are case-insensitive; a parameter may be
  shortened to any unique prefix (`-ExternalConnectionSetting` works). Unknown parameters
  fail with the closest valid name.
* Booleans: `$true`/`$false`, `true`/`false`, `1`/`0`, or `-Param:$false`.
  **Quote `$false`** (single quotes) or write `false`: bash expands an unquoted `$false`
  (and `"$false"`) to nothing. A Boolean parameter left without a value is therefore refused
  (exit 2) rather than guessed; only switches such as `-WhatIf`, `-Confirm`, `-Force` and
  `-LightMode` stand alone.
* Multi-valued parameters: `{a,b}` (bash splits it into two words; both are taken),
  `a,b`, `a, b`, `'@("a","b")'`; `$null` or `{}` empties the list;
  `'@{Add="a","b"; Remove="c"}'` (quoted) adds to and removes from the current list.
* A parameter given twice is refused (no silent last-wins); `-h` is help on every command.
* `-Confirm`, `-Verbose`, `-ErrorAction X` are accepted and ignored; `-WhatIf` on every
  command that writes shows what would change and writes nothing.
* Pipelines (quote the bar): `mailctl Get-ImapSettings '|' Format-List *Bindings` chooses the
  output and properties; `mailctl Get-ReceiveConnector "Client*" '|' Set-ReceiveConnector
  -MaxLogonFailures 5` runs the set- command for each object the get- command returned.
* Cmdlets that only make sense on Windows (Get-/Set-ServerComponentState, iisreset, net,
  New-TestCasConnectivityUser.ps1) fail with "not supported here" and what to do instead.
* Parameters marked "no effect here" (DomainController, EnableGSSAPIAndNTLMAuth,
  ExtendedProtectionPolicy) are stored so pasted scripts keep working, and change nothing.

## Home, exit codes, output

* `--home DIR` (anywhere on the line) or `MAILCTL_HOME` selects the installation; default
  `/var/lib/mailctl` for root, `~/.local/share/mailctl` otherwise. `MAILCTL_SERVER` names
  the local server when settings.toml has several.
* Exit codes: 0 success, 1 the operation failed (e.g. no such mailbox), 2 bad usage or
  value. Errors are one sentence on stderr with what is allowed; a rejected set- command
  leaves settings.toml byte-for-byte unchanged.
* Read commands take `--output table|list|json` (`-o`). JSON is the stable interface for
  scripts: an object for get-popsettings / get-imapsettings (`Server` then every parameter,
  as settings.toml spells it), an array of objects for commands that list things
  (get-mailbox, get-casmailbox, get-receiveconnector, get-service, get-connectionsettings);
  `null` is "not set". Keys and value spellings are the Exchange ones and only grow.
* `get-popsettings`, `get-imapsettings`, `get-receiveconnector`, `get-mailbox`,
  `get-casmailbox` and `get-connectionsettings` with `--output json` are answered without
  loading the CLI framework when settings.toml has not changed since mailctl last read or
  wrote it (a validated copy in `run/settings.cache.json`), for scripts that call them in
  loops. The answer is the same.

## Shell completion

Generated files in `completions/` complete command names in both spellings, options, and
enum values (`--login-type <TAB>`):

* bash: `sudo cp completions/mailctl.bash /etc/bash_completion.d/mailctl`, or add
  `source /path/to/completions/mailctl.bash` to `~/.bashrc`.
* zsh: copy `completions/_mailctl` into a folder on `$fpath` (e.g. `~/.zfunc`, with
  `fpath=(~/.zfunc $fpath)` before `compinit` in `~/.zshrc`).
* fish: `cp completions/mailctl.fish ~/.config/fish/completions/`.

`mailctl completion --shell bash|zsh|fish` prints the same script.

## Commands
"""


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def markdown() -> str:
    out = [INTRO]
    for c in commands():
        out.append(f"### {c.cmdlet} (`mailctl {c.name}`)\n")
        if c.help:
            out.append(re.sub(r"\s*\n\s*", " ", c.help).strip() + "\n")
        args = " ".join(f"{n.upper()}" if req else f"[{n.upper()}]" for n, _, req in c.arguments)
        out.append(f"Usage: `mailctl {c.name}{' ' + args if args else ''} [options]`\n")
        if c.options or c.arguments:
            out.append("| Option | Exchange spelling | Value | Description |")
            out.append("|---|---|---|---|")
            for name, help_text, _ in c.arguments:
                out.append(
                    f"| {name.upper()} (positional) | -{name.title()} | | {_cell(help_text)} |"
                )
            for o in c.options:
                value = (
                    "" if o.flag else (", ".join(o.choices) if o.choices else (o.metavar or "TEXT"))
                )
                out.append(f"| `{o.long}` | `-{o.exchange}` | {_cell(value)} | {_cell(o.help)} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- command index


def command_index() -> str:
    """mailctl/command_index.py: every command name (aliases and unsupported cmdlets too) ->
    its module in mailctl/commands/, and the modules that add hooks."""
    cli.click_group()  # every module imported
    prefix = f"{cli.__package__}.commands."
    names = {name: info.module for name, info in cli.COMMANDS.items()}
    names.update(cli.UNSUPPORTED_MODULES)
    out = [
        '"""Generated by `python -m mailctl.reference` from the registered commands; do not edit.',
        "Command name -> the module of mailctl/commands/ that registers it, so a run imports only",
        'that module (see mailctl.cli.load_modules_for)."""',
        "",
        "COMMANDS: dict[str, str] = {",
    ]
    for name in sorted(names):
        out.append(f"    {json.dumps(name)}: {json.dumps(names[name].removeprefix(prefix))},")
    out += [
        "}",
        "# Modules that add to the CLI hooks (PROTOCOL_ENABLED, ...): imported before a hook runs.",
        f"HOOKS: tuple[str, ...] = ({''.join(json.dumps(m) + ', ' for m in cli.hook_modules()).rstrip()})",
        "# `mailctl --help` on a terminal of 80 columns or more (mailctl.fast prints it without",
        "# importing the commands).",
        f"HELP = {json.dumps(top_help(), ensure_ascii=False)}",
        "",
    ]
    return "\n".join(out)


def top_help() -> str:
    """What `mailctl --help` prints at 80 columns (click's help is at most 78 wide)."""
    import contextlib
    import io

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            cli.run(["--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return buffer.getvalue()


def write_all() -> None:
    for shell, path in FILES.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(GENERATORS[shell]())
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(markdown())
    INDEX.write_text(command_index())


if __name__ == "__main__":
    write_all()
    print(
        "wrote " + ", ".join(str(p.relative_to(ROOT)) for p in [*FILES.values(), DOCS, INDEX]),
        file=sys.stderr,
    )
