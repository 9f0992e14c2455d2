"""MSExchangeDelivery (Mailbox Transport Delivery): the one way into this server's mailboxes
for mail. Submission (server/submission/delivery.py), its non-delivery reports and the
back ends' read receipts (through submission's spool) all hand messages to the delivery
service of the server that holds the recipient's mailbox, over LMTP (RFC 2033, lmtp.py).

The hop: implicit TLS on BackEndAddress:DeliveryPort (the server's certificate, issued by
the organization's CA), then, before the LMTP greeting, the mutual HMAC challenge-response
over the proxy secret that front ends and back ends use (server/protocols/handover.py, with
protocol "LMTP"; the "mailbox" field names the calling service). A peer that fails it is
closed without a byte of LMTP read or sent. docs/security.md has the threat model. The web
service (caller W3SVC) gets one calendar-item request instead of LMTP (items.py): this is how
W3SVC reads a calendar item without opening the store itself.

Replies after DATA are per recipient (RFC 2033 section 4.2): 250 delivered, 552 5.2.2 over
ProhibitSendReceiveQuota (permanent: the sender bounces it), 451 4.3.0 when the store failed
(the sender retries). RCPT refuses unknown addresses (550 5.1.1) and mailboxes of other
servers (550 5.1.6). With an ENVID (the spool entry's id) delivery is idempotent per entry
and mailbox (ledger.py), so a sender that retries after a lost reply does not deliver twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from server.backend.handover import prove_peer
from server.delivery import items
from server.delivery.ledger import DeliveryLedger
from server.delivery.lmtp import LmtpSession, Transaction
from server.directory import DirectoryUnavailable, Entry, ProxySecret, find_entry
from server.moves import fence
from server.retrieval.calendar import calendar_part
from server.runtime.backend_port import BackEndPort
from server.runtime.service import Service, ServiceContext
from server.settings.models import Settings
from server.settings.paths import Home
from server.store import quota
from server.store.api import MailboxStore, MailStore, StoreError

PROTOCOL = items.PROTOCOL  # the protocol name inside the hand-over's proofs ("LMTP")
HANDOVER_DEADLINE = 10.0  # as the back ends (server/backend/service.py)
MAX_UNAUTHENTICATED = 64
IDLE_TIMEOUT = 300.0


def open_default_store(home: Home, server: str) -> MailStore:
    from server.store import open_store

    return open_store(home, server)


class DeliveryService(Service):
    store_factory: Callable[[Home, str], MailStore] = staticmethod(open_default_store)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._port = BackEndPort(
            ctx, lambda server: server.DeliveryPort, self._serve, HANDOVER_DEADLINE
        )
        self._store: MailStore | None = None
        self._ledger: DeliveryLedger | None = None
        self.proxy_secret = ProxySecret(ctx.home)
        self.unauthenticated = 0
        self.delivered = 0

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        home, server = self.ctx.home, self.ctx.server
        self._store = await asyncio.to_thread(type(self).store_factory, home, server)
        self._ledger = await asyncio.to_thread(
            DeliveryLedger, home.database(server) / "delivered.sqlite"
        )
        try:
            await self._port.reconcile()
        except BaseException:
            await self._close()
            raise

    async def reload(self, old: Settings, new: Settings) -> None:
        await self._port.reconcile()

    async def reload_certificates(self) -> None:
        await self._port.reconcile()

    async def stop(self, grace: float) -> None:
        await self._port.stop(grace)
        await self._close()

    async def _close(self) -> None:
        self._port.close()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def status(self) -> dict[str, Any]:
        return {"connections": len(self._port.connections), "endpoints": self._port.endpoints}

    def bound_port(self) -> int:
        return self._port.bound_port()

    # --- a connection ---------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection (BackEndPort tracks it and closes the writer)."""
        peer = (writer.get_extra_info("peername") or ("", 0))[0]
        try:
            caller = await self._authenticate(reader, writer)
            if caller is None:
                return
            if caller == items.READER:
                await items.serve(reader, writer, self._calendar_item)
                return
            session = LmtpSession(self.ctx.server_settings.Fqdn, self._check_rcpt)
            writer.write(session.greeting())
            while not session.closed:
                data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
                if not data:
                    break
                out, txn = session.receive(data)
                while True:
                    writer.write(out)
                    if txn is None:
                        break
                    replies = await asyncio.to_thread(self._deliver, txn, caller, peer)
                    writer.write(session.delivered(replies))
                    out, txn = session.receive(b"")
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str | None:
        """The hand-over's back-end side; the calling service's name, None: closed."""
        shake = await prove_peer(
            self, reader, writer, PROTOCOL, HANDOVER_DEADLINE, MAX_UNAUTHENTICATED
        )
        if shake is None:
            return None
        assert shake.accepted is not None
        writer.write(shake.ok())
        return shake.accepted.mailbox

    # --- LMTP decisions -------------------------------------------------------------
    def _find(self, settings: Settings, address: str) -> Entry | str:
        """The recipient's directory entry (settings.toml or LDAP, as configured), or the
        refusal to give. An LDAP lookup blocks for at most the directory's timeouts."""
        try:
            entry = find_entry(settings, address, self.ctx.home, stale_ok=True)
        except DirectoryUnavailable:
            return f"451 4.4.3 <{address}>: the directory cannot be reached, try again later"
        if entry is None:
            return f"550 5.1.1 <{address}>: no such mailbox"
        if entry.server_name.lower() != self.ctx.server.lower():
            # Moved from here, or to here, a moment ago: the sender's or this process's view
            # of the directory is from before the switch, and a retry will agree; not a
            # reason to bounce.
            moved = fence.in_transit(self.ctx.home, self.ctx.server, entry.name)
            if moved is not None:
                return f"451 4.2.1 <{address}>: {moved}"
            return f"550 5.1.6 <{address}>: mailbox {entry.name} is on server {entry.server_name}"
        return entry

    def _calendar_item(self, mailbox: str, uidvalidity: int, uid: int) -> str | None:
        """The iCalendar part of one message of a mailbox on this server, for the web's
        calendar links (blocking, in a worker thread). None for every kind of "no"."""
        found = self._find(self.ctx.settings, mailbox)
        if isinstance(found, str) or self._store is None:
            return None
        box = self._store.mailbox(found.name)
        ics = None
        try:
            for folder in box.folders():
                if box.status(folder.name).uidvalidity == uidvalidity:
                    ics = calendar_part(box.read(folder.name, uid))
                    break
        except StoreError:
            ics = None
        self.ctx.log.info(
            "service=%s event=calendar-item mailbox=%s uidvalidity=%d uid=%d found=%s",
            self.ctx.name,
            found.name,
            uidvalidity,
            uid,
            ics is not None,
        )
        return ics

    def _check_rcpt(self, address: str) -> str:
        found = self._find(self.ctx.settings, address)
        if isinstance(found, str):
            return found
        moving = fence.refusal(self.ctx.home, self.ctx.server, found.name)
        if moving is not None:
            return f"451 4.2.1 <{address}>: {moving}"
        return f"250 2.1.5 <{address}> OK"

    def _deliver(self, txn: Transaction, caller: str, peer: str) -> list[str]:
        """One reply per accepted recipient (blocking, in a worker thread)."""
        settings = self.ctx.settings
        replies = []
        for address in txn.recipients:
            found = self._find(settings, address)  # settings may have changed since RCPT
            if isinstance(found, str):
                reply = found
            else:
                # A move's final pass waits for this append, or this sees its fence.
                with fence.delivering(self.ctx.home, self.ctx.server, found.name) as moving:
                    reply = (
                        f"451 4.2.1 <{address}>: {moving}"
                        if moving is not None
                        else self._deliver_one(txn, address, found)
                    )
            self.ctx.log.info(
                "service=%s event=lmtp-delivery envid=%s to=%s from=%s caller=%s peer=%s reply=%r",
                self.ctx.name,
                txn.envid,
                address,
                txn.mail_from,
                caller,
                peer,
                reply,
            )
            replies.append(reply)
        return replies

    def _deliver_one(self, txn: Transaction, address: str, entry: Entry) -> str:
        assert self._store is not None and self._ledger is not None
        name, box = entry.name, entry.mailbox
        data = txn.data
        try:
            mailbox = self._store.mailbox(name)
            if txn.envid:
                state = self._ledger.state(txn.envid, name)
                if state is not None:
                    done, from_uid = state
                    if done or (from_uid is not None and _has_copy(mailbox, from_uid, data)):
                        self._ledger.done(txn.envid, name)
                        return f"250 2.1.5 <{address}> delivered already"
            quota.check_receive(mailbox, box, len(data))
            if txn.envid:
                self._ledger.begin(txn.envid, name, mailbox.status("INBOX").uidnext)
            mailbox.append("INBOX", data)
            if txn.envid:
                self._ledger.done(txn.envid, name)
        except quota.OverQuota:
            # Exchange's text, with LMTP's code for "exceeded storage allocation".
            return "552 " + quota.RECEIVE_REFUSED.removeprefix("554 ")
        except Exception as exc:  # noqa: BLE001 - the sender retries a temporary failure
            self.ctx.log.exception("service=%s event=store-error to=%s", self.ctx.name, address)
            return f"451 4.3.0 <{address}> temporary store failure ({type(exc).__name__})"
        self.delivered += 1
        return f"250 2.1.5 <{address}> delivered"


def _has_copy(mailbox: MailboxStore, from_uid: int, data: bytes) -> bool:
    """Whether the INBOX has this very message from `from_uid` on: a delivery whose commit
    happened but whose ledger mark did not."""
    for row in mailbox.snapshot("INBOX").rows:
        if row.uid < from_uid or row.size != len(data):
            continue
        try:
            if mailbox.read("INBOX", row.uid) == data:
                return True
        except Exception:  # noqa: BLE001 - expunged meanwhile: not a copy to count
            continue
    return False
