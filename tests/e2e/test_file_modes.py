"""Mail and secrets under the home are the service account's only: after delivery and
APPEND nothing under data/ or queue/ is readable by group or others (0600 files, 0700
folders), whatever the umask of the process writing; paths left open by something else
are fixed when a service starts and reported by `mailctl get-service` until then."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings.models import DELIVERY, IMAP4BE, SUBMISSION
from server.settings.paths import Home
from server.store import open_store
from server.submission.queue import Recipient, Spool
from tests.conftest import wait_for
from tests.e2e.frontend_support import add_mailboxes, make_home
from tests.e2e.submission_support import login, message

pytestmark = pytest.mark.e2e


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """The usual 022: what the store and the spool write must not depend on the umask."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def open_paths(*roots: Path) -> list[str]:
    """Files and folders under roots that group or others may read (sockets aside: their
    folder guards them)."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                found.append(f"{path.relative_to(root.parent)} {stat.filemode(st.st_mode)}")
    return found


def test_delivered_appended_and_spooled_mail_is_owner_only(
    tmp_path: Path,
    in_process: Any,
    lax_umask: None,
) -> None:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    with in_process(DELIVERY, home), in_process(SUBMISSION, home):
        with login(home) as client:
            client.send_message(message("bob@contoso.test", "alice@contoso.test"))
        mail = open_store(home, "MBX01")
        try:
            wait_for(lambda: mail.mailbox("alice").status("INBOX").messages == 1)
            mail.mailbox("bob").append("INBOX", b"Subject: appended\r\n\r\nhi\r\n")
        finally:
            mail.close()
    Spool(home.queue / "MBX01").add(
        "bob@contoso.test", [Recipient("x@example.org")], b"Subject: queued\r\n\r\nx\r\n"
    )
    assert list((home.data / "MBX01").rglob("mailbox.db*"))
    assert list((home.queue / "MBX01").glob("*.eml"))
    assert open_paths(home.data, home.queue) == []


def test_get_service_reports_open_paths_and_a_start_fixes_them(services: Any) -> None:
    home: Home = services.home
    leaked = home.queue / "MBX01" / "old.eml"
    leaked.parent.mkdir(parents=True, exist_ok=True)
    leaked.write_bytes(b"Subject: spooled by an old version\r\n\r\nx\r\n")
    os.chmod(leaked, 0o644)
    os.chmod(home.data, 0o755)
    result = services.run_ok("get-service", IMAP4BE)
    assert "queue/MBX01/old.eml" in result.stdout and "WARNING" in result.stdout
    rows = json.loads(services.run_ok("get-service", IMAP4BE, "--output", "json").stdout)
    rows = rows if isinstance(rows, list) else [rows]
    assert {"queue/MBX01/old.eml", "data"} <= set(rows[0]["TooOpenPaths"])
    services.start(IMAP4BE)
    assert stat.S_IMODE(leaked.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.data.stat().st_mode) == 0o700
    rows = json.loads(services.run_ok("get-service", IMAP4BE, "--output", "json").stdout)
    rows = rows if isinstance(rows, list) else [rows]
    assert rows[0]["Status"] == "Running" and rows[0]["TooOpenPaths"] == []
    assert "WARNING" not in services.run_ok("get-service", IMAP4BE).stdout
