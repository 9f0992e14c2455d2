"""`mailctl completion --shell bash|zsh|fish`: the completion script, generated from the
registered commands (the same text as the files in completions/)."""

from __future__ import annotations

from typing import Annotated

import typer

from mailctl.cli import command, fail


@command("Completion")
def completion(
    shell: Annotated[
        str, typer.Option("--shell", help="Which shell.", metavar="bash|zsh|fish")
    ] = "bash",
) -> None:
    """Print the shell completion script (see docs/cli.md for where to install it)."""
    from mailctl import reference

    generator = reference.GENERATORS.get(shell.lower())
    if generator is None:
        fail(f"--shell {shell!r} is not supported", allowed="bash, zsh, fish")
    print(generator(), end="")
