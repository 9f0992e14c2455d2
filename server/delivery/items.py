"""Calendar items for the web service, answered by the back end that holds the mailbox.

W3SVC shows the calendar item a link names (server/web/calendar.py), but it opens no store:
only a server's own back-end services do. It asks MSExchangeDelivery of the mailbox's server,
over the hop submission uses for LMTP: TLS verified against the organization's CA and the
server's Fqdn, then the proxy-secret hand-over (server/protocols/handover.py, protocol
"LMTP"), whose mailbox field names the calling service. A caller that names itself READER
gets this one request instead of an LMTP session (W3SVC never delivers mail, and no other
caller reads)::

    W3SVC:                ITEM <mailbox: UTF-8, base64url> <folder UIDVALIDITY> <uid>
    MSExchangeDelivery:   ITEM <octets>, then that many octets of iCalendar (UTF-8)
                       or NONE

and the connection closes. NONE covers every "no": no such mailbox on that server, no folder
with that UIDVALIDITY, no such message, no calendar part in it. The web checks that the
signed-in user owns the mailbox before it asks; the delivery service answers with the
calendar part alone, never the message.

Why this hop and not the IMAP back end's: an IMAP session would hand the web the message as
the mailbox's retrieval options render it (with calendar links, the part the link stands for
is gone), needs the mailbox's IMAP to be enabled, and brings the whole IMAP grammar for one
lookup. The delivery hop already proves both sides to each other and reaches the store of
exactly the server that holds the mailbox.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable

from server.directory import ProxySecret
from server.protocols import handover, proxyv2
from server.runtime import tls
from server.settings.models import Settings
from server.settings.paths import Home

PROTOCOL = "LMTP"  # the delivery port's hand-over protocol (server/delivery/service.py)
READER = "W3SVC"  # the caller that gets the item request instead of LMTP
MAX_REQUEST = 1024  # one ITEM line; a mailbox name is at most a few hundred bytes
MAX_ITEM = 4 * 1024 * 1024  # the iCalendar text of one item; invitations are a few KB
REQUEST_DEADLINE = 10.0  # for the request line, once the hand-over is done

_REQUEST = re.compile(rb"ITEM ([A-Za-z0-9_-]{1,700}) (\d{1,10}) (\d{1,10})\r?\n")
_ANSWER = re.compile(rb"ITEM (\d{1,8})\r\n")
_NONE = b"NONE\r\n"

Lookup = Callable[[str, int, int], str | None]


class ItemsUnavailable(OSError):
    """No answer from the mailbox's server: not reachable, not proved, or broke the protocol.
    The web says "try again later"; nothing about the item is known."""


class ItemRequestError(ValueError):
    """A request the delivery service does not take (it closes without an answer)."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def request(mailbox: str, uidvalidity: int, uid: int) -> bytes:
    return b"ITEM %s %d %d\r\n" % (_b64(mailbox.encode("utf-8")), uidvalidity, uid)


def parse_request(line: bytes) -> tuple[str, int, int]:
    """(mailbox, UIDVALIDITY, UID) of an ITEM line; ItemRequestError for anything else."""
    found = _REQUEST.fullmatch(line)
    if found is None:
        raise ItemRequestError("not an ITEM request")
    field = found.group(1)
    try:
        mailbox = base64.urlsafe_b64decode(field + b"=" * (-len(field) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ItemRequestError("malformed mailbox") from None
    return mailbox, int(found.group(2)), int(found.group(3))


def answer(ics: str | None) -> bytes:
    if ics is None:
        return _NONE
    data = ics.encode("utf-8")
    return (b"ITEM %d\r\n" % len(data)) + data if len(data) <= MAX_ITEM else _NONE


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, find: Lookup) -> None:
    """The delivery service's side, after the hand-over proved the caller: one request, one
    answer. `find` runs in a worker thread (it reads the store)."""
    line = b""
    try:
        async with asyncio.timeout(REQUEST_DEADLINE):
            while b"\n" not in line:
                data = await reader.read(MAX_REQUEST - len(line))
                if not data:
                    return
                line += data
                if len(line) >= MAX_REQUEST and b"\n" not in line:
                    return
    except (TimeoutError, OSError):
        return
    try:
        mailbox, uidvalidity, uid = parse_request(line)  # one line, nothing after it
    except ItemRequestError:
        return
    ics = await asyncio.to_thread(find, mailbox, uidvalidity, uid)
    writer.write(answer(ics))
    await writer.drain()


async def fetch(
    home: Home,
    settings: Settings,
    server: str,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    secret: ProxySecret,
    timeout: float = 10.0,
) -> str | None:
    """The iCalendar text of the item, from the delivery service of `server` (the server that
    holds `mailbox`); None when there is no such item. ItemsUnavailable when no answer came."""
    target = settings.server(server)
    key = secret.cached() or await asyncio.to_thread(secret.load)
    context = tls.shared_client_context(home, verify=True)
    where = f"{server} {target.BackEndAddress}:{target.DeliveryPort}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.BackEndAddress,
                target.DeliveryPort,
                ssl=context,
                server_hostname=target.Fqdn,
            )
    except (OSError, TimeoutError) as exc:
        raise ItemsUnavailable(f"{where}: {exc}") from None
    try:
        async with asyncio.timeout(timeout):
            return await _ask(reader, writer, key, server, mailbox, uidvalidity, uid)
    except TimeoutError:
        raise ItemsUnavailable(f"{where}: no answer in {timeout:g} s") from None
    except handover.HandoverError as exc:
        raise ItemsUnavailable(f"{where}: {exc}") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ItemsUnavailable(f"{where}: {exc!r}") from None
    finally:
        writer.close()


async def _ask(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    key: bytes,
    server: str,
    mailbox: str,
    uidvalidity: int,
    uid: int,
) -> str | None:
    local, remote = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    header = proxyv2.encode(
        proxyv2.ProxyInfo(str(local[0]), int(local[1]), str(remote[0]), int(remote[1]))
    )
    shake = handover.FrontendHandshake(key, PROTOCOL, server, READER, header)
    while not shake.done:
        line = await reader.readline()
        if not line:
            raise ItemsUnavailable(f"{server}: the delivery service closed the hand-over")
        sent = shake.on_line(line)
        if sent:
            writer.write(sent)
    writer.write(request(mailbox, uidvalidity, uid))
    head = await reader.readline()
    if head == _NONE:
        return None
    found = _ANSWER.fullmatch(head)
    if found is None or int(found.group(1)) > MAX_ITEM:
        raise ItemsUnavailable(f"{server}: not an item answer: {head[:40]!r}")
    data = await reader.readexactly(int(found.group(1)))
    return data.decode("utf-8", "replace")
