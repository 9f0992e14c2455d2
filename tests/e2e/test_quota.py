"""Mailbox quotas: Exchange's Set-Mailbox quotas seen through IMAP QUOTA (RFC 9208),
enforced on APPEND/COPY (NO [OVERQUOTA]), local delivery and submission (5.2.2), and
reported by Get-MailboxStatistics."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path
from typing import Any

import pytest

from server.settings import store as settings_store
from server.settings.models import DELIVERY, SUBMISSION
from server.store import open_store
from tests.conftest import wait_for
from tests.e2e.frontend_support import add_mailboxes, make_home
from tests.e2e.submission_support import login, message
from tests.e2e.test_imap_backend import MSG, Backend
from tests.e2e.test_imap_backend import backend as imap_backend  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def set_quota(doc: settings_store.Edit, name: str, **quotas: str) -> None:
    doc.set(("Mailboxes", name, "UseDatabaseQuotaDefaults"), False)
    for key, value in quotas.items():
        doc.set(("Mailboxes", name, key), value)


def sized(kb: int, subject: str = "filler") -> bytes:
    head = f"From: a@contoso.test\r\nSubject: {subject}\r\n\r\n".encode()
    return head + b"x" * (kb * 1024 - len(head) - 2) + b"\r\n"


def test_imap_quota_root_usage_and_overquota(imap_backend: Backend) -> None:  # noqa: F811
    r = imap_backend.raw()
    caps = r.cmd("c CAPABILITY")
    assert " QUOTA " in caps and "QUOTA=RES-STORAGE" in caps
    # The database defaults (Exchange 2013): 2.3 GB to ProhibitSendReceiveQuota.
    assert '* QUOTA "" (STORAGE 0 2411724)' in r.cmd('q GETQUOTA ""')
    imap_backend.edit(lambda doc: set_quota(doc, "alice", ProhibitSendReceiveQuota="10KB"))
    box = imap_backend.inbox()
    box.append("INBOX", sized(4))
    out = r.cmd("q GETQUOTAROOT INBOX")
    assert '* QUOTAROOT "INBOX" ""\r\n* QUOTA "" (STORAGE 4 10)\r\nq OK' in out
    assert '* QUOTA "" (STORAGE 4 10)\r\nq OK' in r.cmd('q GETQUOTA ""')
    assert "q NO [NONEXISTENT]" in r.cmd('q GETQUOTA "elsewhere"')
    assert "q NO [NONEXISTENT]" in r.cmd("q GETQUOTAROOT Nowhere")
    big = sized(8)
    r.sock.sendall(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    assert r.cmd(b"n NOOP").splitlines()[-2].startswith("a NO [OVERQUOTA]")
    # MULTIAPPEND is all or nothing: 3 KB + 4 KB would pass the limit, so neither is kept.
    small, medium = sized(3), sized(4)
    r.sock.sendall(
        b"m APPEND INBOX {%d+}\r\n" % len(small)
        + small
        + b" {%d+}\r\n" % len(medium)
        + medium
        + b"\r\n"
    )
    assert r.cmd(b"n NOOP").splitlines()[-2].startswith("m NO [OVERQUOTA]")
    assert " OK " in r.cmd("s SELECT INBOX")
    assert "y OK [COPYUID" in r.cmd("y COPY 1 INBOX")  # 8 KB of 10
    assert "z NO [OVERQUOTA]" in r.cmd("z COPY 1:* INBOX")  # 16 KB: refused, nothing copied
    assert box.status("INBOX").messages == 2
    r.sock.sendall(b"a APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
    assert "a OK [APPENDUID" in r.cmd(b"n NOOP")
    r.close()


def test_delivery_and_submission_over_quota_get_5_2_2(tmp_path: Path, in_process: Any) -> None:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    mail = open_store(home, "MBX01")
    try:
        mail.mailbox("alice").append("INBOX", sized(6))
        mail.mailbox("carol").append("INBOX", sized(6))
        with settings_store.edit(home) as doc:
            set_quota(doc, "alice", ProhibitSendReceiveQuota="8KB")
            set_quota(doc, "carol", ProhibitSendQuota="4KB", ProhibitSendReceiveQuota="1MB")
        with in_process(DELIVERY, home), in_process(SUBMISSION, home) as svc:
            svc.service.delivery.retry_base = 0.05
            with login(home, "bob") as client:
                client.send_message(
                    message(
                        "bob@contoso.test", "alice@contoso.test", "too big for alice " + "y" * 4000
                    )
                )
            # alice stays as she was; bob gets a non-delivery report saying why.
            wait_for(lambda: mail.mailbox("bob").status("INBOX").messages == 1)
            assert mail.mailbox("alice").status("INBOX").messages == 1
            ndr = mail.mailbox("bob").read("INBOX", 1)
            assert b"Undeliverable" in ndr and b"5.2.2" in ndr and b"alice@contoso.test" in ndr
            with login(home, "carol") as client:
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    client.send_message(message("carol@contoso.test", "bob@contoso.test"))
            assert refused.value.smtp_code == 554 and b"5.2.2" in refused.value.smtp_error
    finally:
        mail.close()


def test_set_mailbox_quotas_and_get_mailboxstatistics(services: Any) -> None:
    services.run_ok("New-Mailbox", "dave", "--password", "Pa55word!x")
    mail = open_store(services.home, "MBX01")
    try:
        mail.mailbox("dave").append("INBOX", sized(3))
        mail.mailbox("dave").append("Archive", sized(2))
    finally:
        mail.close()
    failed = services.mailctl(
        "Set-Mailbox",
        "dave",
        "-UseDatabaseQuotaDefaults",
        "$false",
        "-ProhibitSendQuota",
        "2GB",
        "-ProhibitSendReceiveQuota",
        "1GB",
    )
    assert failed.returncode != 0 and "ProhibitSendQuota" in failed.stderr + failed.stdout
    services.run_ok(
        "Set-Mailbox",
        "dave",
        "-UseDatabaseQuotaDefaults",
        "$false",
        "-IssueWarningQuota",
        "4KB",
        "-ProhibitSendQuota",
        "1.5GB",
        "-ProhibitSendReceiveQuota",
        "2GB (2,147,483,648 bytes)",
    )
    [row] = json.loads(services.run_ok("Get-MailboxStatistics", "dave", "--output", "json").stdout)
    assert row["ItemCount"] == 2 and row["TotalItemSize"] == "5 KB (5,120 bytes)"
    assert row["StorageLimitStatus"] == "IssueWarning"
    assert row["ProhibitSendReceiveQuota"] == "2 GB (2,147,483,648 bytes)"
    assert row["ProhibitSendQuota"] == "1.5 GB (1,610,612,736 bytes)"
    table = services.run_ok("Get-MailboxStatistics", "dave").stdout
    assert "ItemCount" in table and "IssueWarning" in table
    services.run_ok(
        "Set-Mailbox",
        "dave",
        "-ProhibitSendReceiveQuota",
        "Unlimited",
        "-ProhibitSendQuota",
        "Unlimited",
        "-IssueWarningQuota",
        "Unlimited",
    )
    [row] = json.loads(services.run_ok("Get-MailboxStatistics", "dave", "--output", "json").stdout)
    assert row["StorageLimitStatus"] == "NoChecking"
