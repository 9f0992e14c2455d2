"""Mailbox quotas as Exchange has them (Set-Mailbox -IssueWarningQuota, -ProhibitSendQuota,
-ProhibitSendReceiveQuota, -UseDatabaseQuotaDefaults) and what IMAP QUOTA (RFC 9208) and
Get-MailboxStatistics report.

- ProhibitSendReceiveQuota is the hard limit: APPEND and COPY that would pass it get
  NO [OVERQUOTA] (RFC 9208 section 4.3), local delivery refuses with 5.2.2 (a
  non-delivery report, no retry), and it is the STORAGE limit IMAP clients see.
- ProhibitSendQuota: a mailbox at or over it may not submit mail (5.2.2).
- IssueWarningQuota only shows in StorageLimitStatus.

A mailbox with UseDatabaseQuotaDefaults (the default) has its database's limits: one
database per server here, with Exchange 2013's database defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.settings.models import Mailbox
from server.store import usage as usage_module
from server.store.api import MailboxStore, OverQuota
from server.store.usage import exchange_size as exchange_size

GB = 1024**3

#: Exchange 2013 mailbox database defaults (Get-MailboxDatabase | fl *Quota).
DATABASE_DEFAULTS = {
    "IssueWarningQuota": int(1.9 * GB),  # 1.9 GB (2,040,109,465 bytes)
    "ProhibitSendQuota": 2 * GB,  # 2 GB (2,147,483,648 bytes)
    "ProhibitSendReceiveQuota": int(2.3 * GB),  # 2.3 GB (2,469,606,195 bytes)
}

#: RFC 9208 resources this server counts and limits.
RESOURCES = ("STORAGE",)

SEND_REFUSED = (
    "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
    "MapiExceptionShutoffQuotaExceeded; the sender's mailbox is over its "
    "ProhibitSendQuota"
)
RECEIVE_REFUSED = (
    "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
    "MapiExceptionShutoffQuotaExceeded; the recipient's mailbox is over its "
    "ProhibitSendReceiveQuota"
)


@dataclass(frozen=True)
class Limits:
    """Bytes; None is Unlimited."""

    warning: int | None
    send: int | None
    receive: int | None


@dataclass(frozen=True)
class Usage:
    items: int
    bytes: int


#: Why a write past ProhibitSendReceiveQuota is refused (OverQuota's text).
OVER_RECEIVE_QUOTA = "Quota exceeded: the mailbox is over its ProhibitSendReceiveQuota"


def limits(mailbox: Mailbox | None) -> Limits:
    if mailbox is None or getattr(mailbox, "UseDatabaseQuotaDefaults", True):
        d = DATABASE_DEFAULTS
        return Limits(d["IssueWarningQuota"], d["ProhibitSendQuota"], d["ProhibitSendReceiveQuota"])

    def value(name: str) -> int | None:
        size = getattr(mailbox, name, None)
        return None if size is None else size.bytes

    return Limits(
        value("IssueWarningQuota"), value("ProhibitSendQuota"), value("ProhibitSendReceiveQuota")
    )


def usage(box: MailboxStore) -> Usage:
    """Messages and octets in every folder of the mailbox (Exchange's ItemCount and
    TotalItemSize)."""
    return Usage(*box.usage_totals())


def storage_status(used: Usage, limit: Limits) -> str:
    """Exchange's StorageLimitStatus."""
    return usage_module.storage_status(used.bytes, limit.warning, limit.send, limit.receive)


def check_receive(box: MailboxStore, mailbox: Mailbox | None, incoming: int) -> None:
    """Raises OverQuota when `incoming` more octets would pass ProhibitSendReceiveQuota."""
    limit = limits(mailbox).receive
    if limit is not None and usage(box).bytes + incoming > limit:
        raise OverQuota(OVER_RECEIVE_QUOTA)


def may_send(box: MailboxStore, mailbox: Mailbox | None) -> bool:
    limit = limits(mailbox).send
    return limit is None or usage(box).bytes < limit


def imap_quota(box: MailboxStore, mailbox: Mailbox | None) -> bytes:
    """The resource list of the QUOTA response for root "" (RFC 9208 section 5.1):
    STORAGE in units of 1024 octets, usage rounded up."""
    limit = limits(mailbox).receive
    if limit is None:
        return b"()"
    used = usage(box).bytes
    return b"(STORAGE %d %d)" % (-(-used // 1024), limit // 1024)
