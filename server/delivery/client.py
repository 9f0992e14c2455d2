"""The sending side of the LMTP hop to MSExchangeDelivery (blocking; the submission queue
calls it from a worker thread): TLS verified against the organization's CA and the server's
Fqdn, the front end's side of the hand-over (the delivery service proves it knows the proxy
secret before anything about the message is sent), then LMTP with one reply per recipient.
"""

from __future__ import annotations

import smtplib
import socket
from typing import BinaryIO

from server.delivery.lmtp import xtext_encode
from server.delivery.service import PROTOCOL
from server.directory import ProxySecret
from server.protocols import handover, proxyv2
from server.runtime import tls
from server.settings.models import Settings
from server.settings.paths import Home

Reply = tuple[int, str]


class DeliveryUnavailable(OSError):
    """The delivery service could not be reached or did not prove itself: retry later."""


class _LMTP(smtplib.LMTP):
    """smtplib's LMTP over a connection whose hand-over is done (smtplib would connect
    itself and expect the greeting first)."""

    def __init__(self, sock: socket.socket, file: BinaryIO, local_hostname: str) -> None:
        super().__init__(local_hostname=local_hostname)
        self.sock, self.file = sock, file  # type: ignore[assignment]
        code, text = self.getreply()
        if code != 220:
            raise DeliveryUnavailable(f"greeting {code} {text!r}")


def deliver(
    home: Home,
    settings: Settings,
    server: str,
    caller: str,
    mail_from: str,
    rcpts: list[str],
    message: bytes,
    envid: str | None = None,
    timeout: float = 60.0,
    secret: ProxySecret | None = None,
) -> list[Reply]:
    """Hand `message` to the delivery service of `server`; one (code, text) per recipient,
    in order. Raises DeliveryUnavailable (an OSError) when no LMTP session came about."""
    target = settings.server(server)
    secret = secret or ProxySecret(home)
    key = secret.cached() or secret.load()
    try:
        raw = socket.create_connection(
            (target.BackEndAddress, target.DeliveryPort), timeout=timeout
        )
    except OSError as exc:
        raise DeliveryUnavailable(
            f"{server} {PROTOCOL} {target.BackEndAddress}:{target.DeliveryPort}: {exc}"
        ) from None
    try:
        context = tls.shared_client_context(home, verify=True)
        sock = context.wrap_socket(raw, server_hostname=target.Fqdn)
    except OSError as exc:
        raw.close()
        raise DeliveryUnavailable(f"{server}: TLS: {exc}") from None
    try:
        file = sock.makefile("rb")
        local, remote = sock.getsockname(), sock.getpeername()
        header = proxyv2.encode(
            proxyv2.ProxyInfo(str(local[0]), int(local[1]), str(remote[0]), int(remote[1]))
        )
        shake = handover.FrontendHandshake(key, PROTOCOL, server, caller, header)
        while not shake.done:
            line = file.readline(handover.MAX_LINE + 1)
            if not line:
                raise DeliveryUnavailable(f"{server}: the delivery service closed the hand-over")
            answer = shake.on_line(line)
            if answer:
                sock.sendall(answer)
        lmtp = _LMTP(sock, file, settings.server(server).Fqdn)
    except handover.HandoverError as exc:
        sock.close()
        raise DeliveryUnavailable(f"{server}: {exc}") from None
    except BaseException:
        sock.close()
        raise
    try:
        return _transaction(lmtp, mail_from, rcpts, message, envid)
    finally:
        try:
            lmtp.quit()
        except (OSError, smtplib.SMTPException):
            lmtp.close()


def _transaction(
    lmtp: _LMTP, mail_from: str, rcpts: list[str], message: bytes, envid: str | None
) -> list[Reply]:
    def text(reply: bytes | str) -> str:
        return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply

    lmtp.ehlo()
    options = [f"ENVID={xtext_encode(envid)}"] if envid else []
    code, reply = lmtp.mail(mail_from, options)
    if code != 250:
        return [(code, text(reply))] * len(rcpts)
    results: list[Reply | None] = [None] * len(rcpts)
    accepted: list[int] = []
    for i, rcpt in enumerate(rcpts):
        code, reply = lmtp.rcpt(rcpt)
        if code in (250, 251):
            accepted.append(i)
        else:
            results[i] = (code, text(reply))
    if accepted:
        try:
            code, reply = lmtp.data(message)
        except smtplib.SMTPDataError as exc:
            for i in accepted:
                results[i] = (exc.smtp_code, text(exc.smtp_error))
        else:
            # RFC 2033 section 4.2: one reply per accepted recipient, in RCPT order.
            results[accepted[0]] = (code, text(reply))
            for i in accepted[1:]:
                code, reply = lmtp.getreply()
                results[i] = (code, text(reply))
    else:
        lmtp.rset()
    return [r if r is not None else (451, "4.3.0 no reply") for r in results]
