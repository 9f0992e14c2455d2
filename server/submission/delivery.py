"""Delivery of spooled messages: into local mailboxes, or through a smart host.

A local recipient's message is handed over LMTP to MSExchangeDelivery of the server that
holds the mailbox (server/delivery/), which appends it to the INBOX: this process never
writes into a mailbox store. The delivery service answers per recipient: 2xx delivered,
4xx (or no connection) retried, 5xx (unknown, moved, over quota: 552 5.2.2) bounced. The
spool entry's id goes along as the ENVID, and the delivery service delivers each (entry,
mailbox) at most once, so a retry after a lost reply or a crash is harmless. Mail for other
domains goes to the SmartHosts of the first enabled SendConnector whose AddressSpaces match
(smtplib, STARTTLS when offered, required when the connector says RequireTLS).

Failures are retried from the spool with a growing delay (retry_base doubling, capped at an
hour); a permanent refusal (5xx) or a message older than MAX_AGE is given up and, when the
sender is a local mailbox, a non-delivery report is spooled to the sender (null envelope
sender) and goes the same way.

Entries other processes spool (read receipts from the back ends) are picked up as soon as
they are committed (queue.SpoolWatcher); an entry is delivered by one Delivery object only,
whichever way it became known.

No copy goes to the sender's Sent Items: IMAP clients (Thunderbird, Outlook, Apple Mail) save
their own copy there after sending, and a second one would show every sent message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import fnmatch
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser

from server.delivery import client as lmtp_client
from server.directory import DirectoryUnavailable, ProxySecret, find_entry, ldap_for
from server.runtime import tls
from server.settings.models import SendConnector, Settings
from server.settings.paths import Home
from server.store.api import MailboxStore, MailStore
from server.submission.queue import QueueEntry, Recipient, Spool, SpoolWatcher

MAX_AGE = 2 * 86400.0  # then give up and send a non-delivery report (Exchange: 2 days)
RETRY_CAP = 3600.0
# 451 4.2.1 from MSExchangeDelivery: the mailbox is in a move's final lock (well under a
# second) or was just switched to another server. Retried soon, for a minute, instead of
# waiting the spool's first minute of back-off; then the ordinary back-off.
MOVING_RETRY = 5.0
MOVING_ATTEMPTS = 12


class PermanentFailure(Exception):
    pass


def route(settings: Settings, address: str) -> SendConnector | None:
    """The enabled send connector with a smart host whose address space matches."""
    domain = address.rpartition("@")[2].lower()
    for connector in settings.SendConnectors.values():
        if not connector.Enabled or not connector.SmartHosts:
            continue
        for space in connector.AddressSpaces:
            space = space.split(":", 1)[-1].split(";", 1)[0].strip().lower()  # SMTP:*;1
            if fnmatch.fnmatch(domain, space) or space == "*":
                return connector
    return None


def relay_through(
    home: Home,
    connector: SendConnector,
    mail_from: str,
    rcpts: list[str],
    message: bytes,
    timeout: float = 60,
) -> dict[str, tuple[int, str]]:
    """Hand a message to the connector's first reachable smart host (blocking).
    Returns refused recipients {address: (code, text)}; raises OSError / SMTP errors when no
    host took it, PermanentFailure when the host refused the whole message for good."""
    errors: list[str] = []
    for host_spec in connector.SmartHosts:
        host, _, port_text = host_spec.partition(":")
        port = int(port_text) if port_text else 25
        try:
            with smtplib.SMTP(host, port, timeout=timeout) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    context = ssl.create_default_context()
                    context.load_verify_locations(cafile=str(tls.ensure_ca(home)))
                    smtp.starttls(context=context)
                    smtp.ehlo()
                elif connector.RequireTLS:
                    raise OSError(f"{host_spec} does not offer STARTTLS and RequireTLS is set")
                try:
                    refused = smtp.sendmail(mail_from, rcpts, message)
                except smtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients
                except smtplib.SMTPResponseException as exc:
                    if 500 <= exc.smtp_code < 600:
                        raise PermanentFailure(f"{exc.smtp_code} {exc.smtp_error!r}") from exc
                    raise
                return {
                    r: (
                        code,
                        text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text),
                    )
                    for r, (code, text) in refused.items()
                }
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(f"{host_spec}: {exc}")
    raise OSError("; ".join(errors) or "no smart host")


class Delivery:
    """Works through the spool of one server's submission service."""

    def __init__(
        self,
        home: Home,
        spool: Spool,
        settings: Callable[[], Settings],
        log: logging.Logger | None = None,
    ) -> None:
        self.home, self.spool, self.settings = home, spool, settings
        self.log = log or logging.getLogger("mailctl")
        self.retry_base = 60.0
        self._entries: dict[str, QueueEntry] = {}
        self._wake = asyncio.Event()
        self._secret = ProxySecret(home)
        self._stores: dict[str, MailStore] = {}
        self.caller = "MSExchangeFrontEndTransport"  # named to the delivery service (its log)
        self._task: asyncio.Task[None] | None = None
        self._watcher = SpoolWatcher(spool.folder, self._spool_changed)
        self._pickups: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        # Watching first: an entry committed while the spool is being read is then reported
        # too (and recognised by its id), never missed.
        await self._watcher.start()
        for entry in await asyncio.to_thread(self.spool.load):
            self._entries.setdefault(entry.id, entry)
        self._task = asyncio.create_task(self._run(), name="delivery")

    async def stop(self) -> None:
        self._watcher.close()
        for pickup in list(self._pickups):
            pickup.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def submit(self, entry: QueueEntry) -> None:
        # The watcher may have loaded this entry from disk already; that copy may be in a
        # delivery attempt right now, so it stays the one.
        self._entries.setdefault(entry.id, entry)
        self._wake.set()

    def _spool_changed(self, ids: set[str]) -> None:
        unknown = ids - self._entries.keys()
        if unknown:
            task = asyncio.get_running_loop().create_task(self._pick_up(unknown))
            self._pickups.add(task)
            task.add_done_callback(self._pickups.discard)

    async def _pick_up(self, ids: set[str]) -> None:
        """Entries written by another process (or by this one before submit): those still
        on disk join the queue. One read after its delivery finished finds no file."""
        found = await asyncio.to_thread(lambda: [self.spool.entry(i) for i in sorted(ids)])
        added = 0
        for entry in found:
            if entry is not None and entry.id not in self._entries:
                self._entries[entry.id] = entry
                added += 1
        if added:
            self.log.info("event=spool-picked-up entries=%d", added)
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._entries)

    async def idle(self) -> None:
        """Wait until nothing is due now (tests, graceful stop)."""
        while any(r.next_try <= time.time() for e in self._entries.values() for r in e.recipients):
            await asyncio.sleep(0.01)

    # --- the loop -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            for entry in list(self._entries.values()):
                if any(r.next_try <= now for r in entry.recipients):
                    try:
                        await asyncio.to_thread(self._attempt, entry)
                    except Exception:  # a bug in one message must not stop the queue
                        self.log.exception("event=delivery-error id=%s", entry.id)
                    if not entry.recipients:
                        self._entries.pop(entry.id, None)
            due = [r.next_try for e in self._entries.values() for r in e.recipients]
            wait = max(0.0, min(due) - time.time()) if due else None
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _home_server(self, settings: Settings, rcpt: Recipient) -> str:
        """Where the mailbox is now: it may have moved since the message was accepted. A
        mailbox kept in LDAP is asked for again when a try failed (a move answers 451 4.2.1
        until the directory names the new server); the first try uses the server found at
        acceptance, so a delivery costs no extra search."""
        found = settings.mailbox(rcpt.address) or settings.mailbox(rcpt.mailbox or "")
        if found is not None:
            return found[1].Server
        if rcpt.attempts and ldap_for(settings, self.home) is not None:
            with contextlib.suppress(DirectoryUnavailable):
                entry = find_entry(settings, rcpt.mailbox or rcpt.address, self.home)
                if entry is not None:
                    return entry.mailbox.Server
        assert rcpt.server is not None
        return rcpt.server

    def _attempt(self, entry: QueueEntry) -> None:
        """One pass over the due recipients of an entry (blocking, in a worker thread)."""
        now = time.time()
        try:
            message = self.spool.message(entry)
        except FileNotFoundError:
            # Delivered already (a copy read from disk just before its files went) or
            # removed by the admin: nothing left to send.
            entry.recipients = []
            self.spool.update(entry)
            return
        settings = self.settings()
        due = [r for r in entry.recipients if r.next_try <= now]
        done: list[Recipient] = []
        failed: list[tuple[Recipient, str, bool]] = []  # recipient, error, permanent
        by_server: dict[str, list[Recipient]] = {}
        for rcpt in [r for r in due if r.mailbox]:
            by_server.setdefault(self._home_server(settings, rcpt), []).append(rcpt)
        for server, rcpts in by_server.items():
            try:
                replies = self.lmtp(
                    settings, server, entry.mail_from, [r.address for r in rcpts], message, entry.id
                )
            except Exception as exc:  # the delivery service is down or not ours: retry
                failed.extend((r, f"{type(exc).__name__}: {exc}", False) for r in rcpts)
                continue
            delivered = []
            for rcpt, (code, text) in zip(rcpts, replies, strict=True):
                if 200 <= code < 300:
                    delivered.append(rcpt)
                    self.log.info(
                        "event=delivered id=%s to=%s server=%s", entry.id, rcpt.address, server
                    )
                else:
                    failed.append((rcpt, f"{code} {text}", code >= 500))
            done.extend(delivered)
            if delivered:
                # Recorded at once; a crash before this is harmless: the delivery service
                # remembers (entry id, mailbox) and does not deliver a retry again.
                entry.recipients = [
                    r for r in entry.recipients if not any(r is d for d in delivered)
                ]
                self.spool.update(entry)
                if not entry.recipients:
                    return
        remote = [r for r in due if not r.mailbox]
        by_connector: dict[str, list[Recipient]] = {}
        for rcpt in remote:
            connector = route(settings, rcpt.address)
            if connector is None:
                failed.append((rcpt, "no send connector routes this domain", True))
                continue
            key = next(k for k, v in settings.SendConnectors.items() if v is connector)
            by_connector.setdefault(key, []).append(rcpt)
        for key, rcpts in by_connector.items():
            connector = settings.SendConnectors[key]
            try:
                refused = relay_through(
                    self.home, connector, entry.mail_from, [r.address for r in rcpts], message
                )
            except PermanentFailure as exc:
                failed.extend((r, str(exc), True) for r in rcpts)
                continue
            except (OSError, smtplib.SMTPException) as exc:
                failed.extend((r, str(exc), False) for r in rcpts)
                continue
            for rcpt in rcpts:
                if rcpt.address in refused:
                    code, text = refused[rcpt.address]
                    failed.append((rcpt, f"{code} {text}", code >= 500))
                else:
                    done.append(rcpt)
                    self.log.info("event=relayed id=%s to=%s via=%s", entry.id, rcpt.address, key)
            # The smart host has these now: recorded before the next host is tried, so a
            # crash does not hand them over twice.
            relayed = [r for r in rcpts if r in done]
            if relayed:
                entry.recipients = [r for r in entry.recipients if not any(r is d for d in relayed)]
                self.spool.update(entry)
        gave_up: list[tuple[Recipient, str]] = []
        for rcpt, error, permanent in failed:
            rcpt.attempts += 1
            rcpt.last_error = error
            if permanent or now - entry.received > MAX_AGE:
                gave_up.append((rcpt, error))
                done.append(rcpt)
                self.log.warning(
                    "event=undeliverable id=%s to=%s error=%r", entry.id, rcpt.address, error
                )
            else:
                rcpt.next_try = now + self._retry_delay(rcpt.attempts, error)
                self.log.warning(
                    "event=deferred id=%s to=%s attempt=%d error=%r",
                    entry.id,
                    rcpt.address,
                    rcpt.attempts,
                    error,
                )
        if gave_up:
            self._bounce(entry, message, gave_up)
        entry.recipients = [r for r in entry.recipients if r not in done]
        self.spool.update(entry)

    def _retry_delay(self, attempts: int, error: str) -> float:
        backoff = min(RETRY_CAP, self.retry_base * 2 ** (attempts - 1))
        if error.split()[1:2] == ["4.2.1"] and attempts <= MOVING_ATTEMPTS:
            return min(MOVING_RETRY, backoff)
        return backoff

    def mailbox_store(self, server: str, name: str) -> MailboxStore:
        """A mailbox's store, read only: the sender's usage for ProhibitSendQuota at MAIL
        FROM. Delivery never writes through it (see lmtp())."""
        store = self._stores.get(server)
        if store is None:
            from server.store import open_store

            store = self._stores[server] = open_store(self.home, server)
        return store.mailbox(name)

    def lmtp(
        self,
        settings: Settings,
        server: str,
        mail_from: str,
        rcpts: list[str],
        message: bytes,
        envid: str,
    ) -> list[tuple[int, str]]:
        """Hand a message to MSExchangeDelivery of `server` (server/delivery/): one reply
        per recipient. The submission service never opens a mailbox store itself."""
        return lmtp_client.deliver(
            self.home,
            settings,
            server,
            self.caller,
            mail_from,
            rcpts,
            message,
            envid=envid,
            secret=self._secret,
        )

    def _bounce(
        self, entry: QueueEntry, message: bytes, failures: list[tuple[Recipient, str]]
    ) -> None:
        """A non-delivery report into the sender's INBOX (only local senders get one)."""
        settings = self.settings()
        found = settings.mailbox(entry.sender_mailbox or entry.mail_from)
        if found is None:
            return
        name, box = found
        headers = BytesHeaderParser().parsebytes(message)
        subject = str(headers.get("Subject", "(no subject)"))
        fqdn = settings.server(box.Server).Fqdn
        lines = "\r\n".join(f"  {r.address}: {error}" for r, error in failures)
        report = (
            f"From: Mail Delivery System <postmaster@{fqdn}>\r\n"
            f"To: {entry.mail_from}\r\n"
            f"Subject: Undeliverable: {subject}\r\n"
            f"Date: {email.utils.formatdate(localtime=False)}\r\n"
            f"Message-ID: {email.utils.make_msgid(domain=fqdn)}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            "Your message could not be delivered to these recipients:\r\n\r\n"
            f"{lines}\r\n"
        ).encode()
        # Spooled like any message (null sender, so it never bounces itself): it reaches
        # the sender's INBOX through the delivery service, with the queue's retries.
        try:
            report_entry = self.spool.add(
                "", [Recipient(entry.mail_from, name, box.Server)], report
            )
        except Exception:
            self.log.exception("event=bounce-failed id=%s", entry.id)
            return
        # The spool watcher reports it to the queue (this runs in a worker thread).
        self.log.info("event=bounce-spooled id=%s report=%s", entry.id, report_entry.id)
