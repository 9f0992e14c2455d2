"""completions/ and docs/cli.md are generated from the commands: they must be current
(regenerate with `python -m mailctl.reference`), and the scripts must work in their shells."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mailctl import reference
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

STALE = "out of date: run `python -m mailctl.reference` and commit the result"


@pytest.mark.parametrize("shell", sorted(reference.FILES))
def test_completion_files_are_current(shell: str) -> None:
    assert reference.FILES[shell].read_text() == reference.GENERATORS[shell](), (
        f"{reference.FILES[shell]} {STALE}"
    )


def test_docs_are_current() -> None:
    assert reference.DOCS.read_text() == reference.markdown(), f"docs/cli.md {STALE}"


def test_docs_list_every_parameter_of_the_settings_cmdlets() -> None:
    from server.settings.models import ImapSettings, PopSettings

    text = reference.DOCS.read_text()
    for field in {*PopSettings.model_fields, *ImapSettings.model_fields}:
        assert f"`-{field}`" in text, field


def test_completion_command_prints_the_file(home: Home) -> None:
    assert ok(home, "completion", "--shell", "fish").out == reference.FILES["fish"].read_text()
    assert mailctl(home, "completion", "--shell", "tcsh").code == 2


def bash_complete(words: list[str]) -> list[str]:
    script = (
        f"source {reference.FILES['bash']}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; _mailctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_both_spellings() -> None:
    assert "set-popsettings" in bash_complete(["mailctl", "set-pop"])
    assert "Set-PopSettings" in bash_complete(["mailctl", "Set-Pop"])
    assert "--login-type" in bash_complete(["mailctl", "set-popsettings", "--log"])
    assert "-LoginType" in bash_complete(["mailctl", "Set-PopSettings", "-Log"])
    assert bash_complete(["mailctl", "Set-PopSettings", "-LoginType", ""]) == [
        "PlainTextLogin",
        "PlainTextAuthentication",
        "SecureLogin",
    ]


@pytest.mark.parametrize(("shell", "path"), [("zsh", "zsh"), ("fish", "fish")])
def test_script_parses_in_its_shell(shell: str, path: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    subprocess.run([shell, "-n", str(reference.FILES[path])], check=True)
