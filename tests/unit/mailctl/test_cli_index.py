"""mailctl/command_index.py: a run imports only the module of its command (and rich only
for tables); the index is current; anything the index does not know still works."""

from __future__ import annotations

import json
import subprocess
import sys

from mailctl import cli, reference
from server.settings.paths import Home
from tests.unit.mailctl.test_cli_generated import STALE

PROBE = """
import json, sys
from mailctl.cli import run
code = run(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({
    "code": code,
    "modules": sorted(m for m in sys.modules if m.startswith("mailctl.commands.")),
    "rich": "rich" in sys.modules,
}), file=sys.stderr)
"""


def imports_of(home: Home, *args: str) -> dict[str, object]:
    """What a fresh process imported to run `args` (the report is stderr's last line)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def test_index_is_current() -> None:
    assert reference.INDEX.read_text() == reference.command_index(), f"{reference.INDEX} {STALE}"


def test_index_names_every_command_alias_and_unsupported_cmdlet() -> None:
    from mailctl.command_index import COMMANDS, HOOKS

    cli.load_commands()
    assert set(COMMANDS) == set(cli.COMMANDS) | set(cli.UNSUPPORTED)
    assert COMMANDS["new-mailboximportrequest"] == COMMANDS["import-mailbox"]
    assert "services" in HOOKS  # enable-/disable- start and stop through its hooks


def test_a_run_imports_only_its_commands_module(home: Home) -> None:
    ran = imports_of(home, "Set-PopSettings", "-Banner", "hello", "-WhatIf")
    assert ran == {
        "code": 0,
        "modules": ["mailctl.commands.protocol_settings"],
        "rich": False,
    }
    ran = imports_of(home, "get-receiveconnector", "--output", "json")
    assert ran["modules"] == ["mailctl.commands.receive_connectors"] and not ran["rich"]


def test_a_pipeline_imports_the_modules_of_its_stages(home: Home) -> None:
    ran = imports_of(
        home, "Get-Mailbox", "|", "Set-ReceiveConnector", "x", "-Enabled", "1", "-WhatIf"
    )
    assert ran["modules"] == ["mailctl.commands.mailboxes", "mailctl.commands.receive_connectors"]


def test_tables_import_rich(home: Home) -> None:
    assert imports_of(home, "get-popsettings")["rich"] is True


def test_help_and_unknown_names_load_every_module(home: Home) -> None:
    every = imports_of(home, "--help")["modules"]
    assert "mailctl.commands.services" in every and "mailctl.commands.mailboxes" in every
    ran = imports_of(home, "Get-PopSetting")  # a typo: the suggestion needs every name
    assert ran["code"] == 2 and ran["modules"] == every


def test_a_stale_index_falls_back_to_loading_everything(home: Home) -> None:
    # get-mailbox "moved" to init.py, get-casmailbox is missing: both still run.
    patch = (
        "import mailctl.command_index as i; i.COMMANDS['get-mailbox'] = 'init'; "
        "del i.COMMANDS['get-casmailbox']\n"
    )
    for command in ("get-mailbox", "get-casmailbox"):
        result = subprocess.run(
            [sys.executable, "-c", patch + PROBE, "--home", str(home.root), command, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        ran = json.loads(result.stderr.strip().splitlines()[-1])
        assert ran["code"] == 0 and "mailctl.commands.services" in ran["modules"], command
        assert json.loads(result.stdout) == []  # the test home has no mailbox
