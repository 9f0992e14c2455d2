"""QUOTA (RFC 9208): GETQUOTAROOT and GETQUOTA over the mailbox's Exchange quotas
(server.store.quota). Every folder of a mailbox has the one quota root "", whose STORAGE
limit is ProhibitSendReceiveQuota; SETQUOTA is not offered (no QUOTASET): quotas are the
administrator's (Set-Mailbox).

Imported (so registered) by append and copymove, which check quotas through it."""

from __future__ import annotations

from server.backend.imap.commands import AUTH, command
from server.backend.imap.commands.mailbox import wire_name
from server.backend.imap.session import ImapSession, No
from server.protocols.imap import requests as rq
from server.settings.models import Mailbox
from server.store import quota

ROOT = ""


def mailbox_settings(s: ImapSession) -> Mailbox | None:
    """The mailbox's directory entry as the settings say now (quotas change live)."""
    assert s.login is not None
    live = s.config.settings().Mailboxes.get(s.login.name)
    return live if live is not None else s.login.mailbox


def check_room(s: ImapSession, incoming: int) -> None:
    """NO [OVERQUOTA] for a write of `incoming` octets past ProhibitSendReceiveQuota."""
    try:
        quota.check_receive(s.store, mailbox_settings(s), incoming)
    except quota.OverQuota as exc:
        raise No(str(exc), "OVERQUOTA") from None


def receive_limit(s: ImapSession) -> int | None:
    """ProhibitSendReceiveQuota in octets (None: unlimited), for the store to check."""
    return quota.limits(mailbox_settings(s)).receive


def _quota_line(s: ImapSession) -> bytes:
    return b'QUOTA "" ' + quota.imap_quota(s.store, mailbox_settings(s))


@command(rq.GetQuotaRoot, states=AUTH)
def getquotaroot(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.GetQuotaRoot = cmd.args  # type: ignore[assignment]
    s.store.status(args.mailbox)  # a folder that does not exist: NO [NONEXISTENT]
    s.untagged(b"QUOTAROOT " + wire_name(args.mailbox) + b' ""')
    s.untagged(_quota_line(s))
    return None


@command(rq.GetQuota, states=AUTH)
def getquota(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.GetQuota = cmd.args  # type: ignore[assignment]
    if args.root != ROOT:
        raise No("No such quota root", "NONEXISTENT")
    s.untagged(_quota_line(s))
    return None
