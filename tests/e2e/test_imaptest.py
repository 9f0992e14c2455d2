"""Dovecot's imaptest compliance suite against the real IMAP pair, through the front end.

mailctl starts MSExchangeIMAP4BE and MSExchangeIMAP4 of a fresh home; a throwaway mailbox
logs in with LOGIN in clear text (LoginType PlainTextLogin, the suite's way in), and
../shared/imaptest/run plays every scripted group (each one deletes and recreates the
"imaptest*" folders, hence the throwaway mailbox). No group may fail. A group whose
`capabilities:` header names something the back end does not advertise is skipped by
imaptest (so is one that needs a second user); only the groups in KNOWN_SKIPPED may be, so
a capability that stops being advertised shows up here, and a newly advertised one must pass
its groups.
"""

from __future__ import annotations

import imaplib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, ServiceRunner

pytestmark = pytest.mark.e2e

SUITE = REPO.parent / "shared" / "imaptest"  # ../shared/imaptest, as in CI
USER, PASSWORD = "imaptester", "Imaptest-pass-1"

# Groups imaptest skips here, and why. Remove a group when that changes: the test then
# insists it passes.
KNOWN_SKIPPED = frozenset(
    {
        # Needs a second user ("user 2:"), which ../shared/imaptest/run does not give; and even
        # given one (EXTRA=user2=...), the group has no "messages:" header, so imaptest appends
        # nothing and its first command, FETCH 1:2, cannot succeed on any server (Dovecot's
        # reference run skips it too). What it checks - URLFETCH of another user's URLAUTH URL,
        # NIL after RESETKEY - is tested in tests/e2e/test_imap_appendext.py.
        "urlauth2",
    }
)


def _header(path: Path) -> dict[str, str]:
    """A group's header lines (before the first blank line; some group files carry binary
    data further down), by lower-case key."""
    head = path.read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
    return {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.splitlines())
    }


def _groups() -> dict[str, set[str]]:
    """Each group's required capabilities (upper case); a group that needs a second user
    asks for one that can never be advertised, since imaptest skips it the same way."""
    out: dict[str, set[str]] = {}
    for p in sorted((SUITE / "tests").iterdir()):
        if p.name.endswith(".mbox"):
            continue
        header = _header(p)
        out[p.name] = set(header.get("capabilities", "").upper().split())
        if "user 2" in header:
            out[p.name].add("(a second user)")
    return out


def _runnable() -> str | None:
    """Why the suite cannot run here, or None."""
    if not (SUITE / "run").is_file() or not (SUITE / "tests").is_dir():
        return f"imaptest is not installed at {SUITE} (a shared folder beside the repository)"
    try:
        probe = subprocess.run(
            [str(SUITE / "imaptest")], capture_output=True, text=True, timeout=30
        )
    except OSError as exc:
        return f"the imaptest binary cannot run here: {exc}"
    if "Fatal:" not in probe.stdout + probe.stderr:  # it runs: it complains about its args
        return f"the imaptest binary cannot run here: {(probe.stdout + probe.stderr)[-300:]}"
    return None


@pytest.fixture
def suite() -> Path:
    """../shared/imaptest, checked before any service is started."""
    reason = _runnable()
    if reason:
        pytest.skip(reason)
    return SUITE


@pytest.fixture
def imap_pair(suite: Path, services: ServiceRunner) -> int:
    """The front end's plain port, with the pair running and the throwaway mailbox made."""
    services.new_mailbox(USER, PASSWORD)
    return services.start_imap_plain()


def test_imaptest_suite_passes_through_the_front_end(imap_pair: int, tmp_path: Path) -> None:
    with imaplib.IMAP4("127.0.0.1", imap_pair, timeout=30) as client:
        client.login(USER, PASSWORD)
        _, data = client.capability()  # the back end's list, as imaptest sees it
        advertised = set(data[0].decode().upper().split())
        client.logout()
    groups = _groups()
    skipped = {name for name, caps in groups.items() if not caps <= advertised}
    assert skipped <= KNOWN_SKIPPED, (
        f"groups skipped for a capability not advertised: {sorted(skipped - KNOWN_SKIPPED)}"
    )

    log = tmp_path / "imaptest.log"
    env = dict(os.environ, LOG=str(log), TIMEOUT="170")
    env.pop("EXTRA", None)
    result = subprocess.run(
        [str(SUITE / "run"), "127.0.0.1", str(imap_pair), USER, PASSWORD],
        capture_output=True,
        text=True,
        env=env,
        timeout=200,
    )
    out = result.stdout + result.stderr
    summary = re.search(r"^(\d+) test groups: (\d+) failed, (\d+) skipped", out, re.M)
    assert summary is not None, f"imaptest gave no summary (exit {result.returncode}):\n{out}"
    failed = re.search(r"^groups with failures: (.*)$", out, re.M)
    details = log.read_text("utf-8", "replace")[:8000] if log.exists() else ""
    assert failed is None and summary.group(2) == "0", f"{out}\n{details}"
    assert int(summary.group(1)) == len(groups)
    assert int(summary.group(3)) == len(skipped), out
    assert result.returncode == 0, out
