"""imaptest's ENVELOPE, BODYSTRUCTURE and address SEARCH groups through the front end
(MSExchangeIMAP4) to the back end over the real store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from server.settings.paths import Home
from tests.e2e.frontend_support import PASSWORD, ports

pytestmark = pytest.mark.e2e

IMAPTEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "imaptest" / "run"
GROUPS = ("fetch-envelope", "fetch-bodystructure", "search-addresses")


@pytest.mark.skipif(not IMAPTEST.exists(), reason="../shared/imaptest is not available here")
@pytest.mark.parametrize("group", GROUPS)
def test_imaptest_mime_groups(imap_site: Home, group: str) -> None:
    port = ports(imap_site, "IMAP")[0]
    result = subprocess.run(
        [str(IMAPTEST), "127.0.0.1", str(port), "bob", PASSWORD, group],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and " 0 failed" in result.stdout, result.stdout + result.stderr
