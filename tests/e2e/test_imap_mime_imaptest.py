"""imaptest's ENVELOPE, BODYSTRUCTURE and address SEARCH groups through the front end
(MSExchangeIMAP4) to the back end over the real store."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings.models import IMAP4, IMAP4BE, LoginType
from server.settings.paths import Home
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, configure, make_home, ports

pytestmark = pytest.mark.e2e

IMAPTEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "imaptest" / "run"
GROUPS = ("fetch-envelope", "fetch-bodystructure", "search-addresses")


@pytest.fixture
def site(tmp_path: Path, in_process: Any) -> Iterator[Home]:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    configure(home, "IMAP", LoginType=LoginType.PlainTextLogin)
    with in_process(IMAP4BE, home, "MBX01"), in_process(IMAP4, home, "MBX01"):
        yield home


@pytest.mark.skipif(not IMAPTEST.exists(), reason="../shared/imaptest is not available here")
@pytest.mark.parametrize("group", GROUPS)
def test_imaptest_mime_groups(site: Home, group: str) -> None:
    port = ports(site, "IMAP")[0]
    result = subprocess.run(
        [str(IMAPTEST), "127.0.0.1", str(port), "bob", PASSWORD, group],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and " 0 failed" in result.stdout, result.stdout + result.stderr
